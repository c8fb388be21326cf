// V8's heap while a Graph sink is open. The CLI starts node with --optimize-for-size (src/launch.ts)
// for the Maildir sink's memory bound; under it V8 collects the old generation whenever it has grown
// a little, and a Graph run, whose deliveries and requests outlive the 1 MB young generation, spent
// a third of its CPU collecting. V8 reads both flags below at each collection, so they are set when
// the first Graph sink opens and put back when the last one closes (a Maildir job after it in the
// same process keeps its bound). Measured (README, Graph): a fifth less CPU, at most a tenth more peak RSS.
import { setFlagsFromString } from 'node:v8';

/** The old generation grows by a quarter of what it holds before it is collected again, the memory-reducing collections off. */
const GRAPH_HEAP_FLAGS = '--no-optimize-for-size --heap-growing-percent=25';
/** The CLI's launch flags, as V8 had them before. */
const LAUNCH_HEAP_FLAGS = '--optimize-for-size --heap-growing-percent=0';

/** The Graph sinks open (each once, however often it says so): the flags stay while any is. */
const open = new Set<object>();
let changed = false;

/** `sink` opened. A process not started with the CLI's --optimize-for-size, or given a heap flag of its own (also in NODE_OPTIONS), is left as it is. */
export function graphSinkOpened(sink: object): void {
  if (open.has(sink)) return;
  open.add(sink);
  if (open.size > 1) return;
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  changed = flags.includes('--optimize-for-size') && !flags.some((f) => /^--(no[-_])?(heap[-_]growing[-_]percent|optimize[-_]for[-_]size)/.test(f) && f !== '--optimize-for-size');
  if (changed) setFlagsFromString(GRAPH_HEAP_FLAGS);
}

/** `sink` has closed (whether or not it opened). */
export function graphSinkClosed(sink: object): void {
  if (!open.delete(sink) || open.size > 0 || !changed) return;
  changed = false;
  setFlagsFromString(LAUNCH_HEAP_FLAGS);
}
