// SIGINT/SIGTERM that arrive before a command has set its own handlers (loading the CLI takes a
// second or more on a loaded host): kept for the command, so a run stops at once with its record
// (exit 4) instead of dying unrecorded (exit 143). A command that never takes them (status,
// report...) gets the signal's usual end a moment later, unless it ends first by itself.

/**
 * How long a kept signal waits for a command to take it before it ends the process as usual:
 * longer than the CLI takes to load on a host out of CPU (over 2 s was seen at a load of 10 on 2
 * cores, and a run killed then is unrecorded); a command that takes no signals and ends sooner ends.
 */
const UNTAKEN_MS = 10_000;

const arrived: NodeJS.Signals[] = [];
let taken = false;

function keep(signal: NodeJS.Signals): void {
  arrived.push(signal);
  setTimeout(() => {
    if (taken) return;
    release();
    process.kill(process.pid, signal);
  }, UNTAKEN_MS).unref();
}

function release(): void {
  process.off('SIGINT', keep);
  process.off('SIGTERM', keep);
}

/** Called first thing by the bin. */
export function keepEarlySignals(): void {
  process.on('SIGINT', keep);
  process.on('SIGTERM', keep);
}

/** For a command that has set its own handlers: the signals that came before, no longer kept. */
export function takeEarlySignals(): NodeJS.Signals[] {
  taken = true;
  release();
  return arrived.splice(0);
}
