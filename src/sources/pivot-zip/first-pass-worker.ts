// The checking pass over messages files, on a worker thread: see first-pass.ts for the main
// thread's side and why.
import { parentPort, workerData } from 'node:worker_threads';
import { PivotArchiveError, errorMessage } from '../../errors.js';
import { isObject } from '../../formats/pivot-export/event.js';
import { openEntryOnDescriptor } from '../../formats/zip/index.js';
import { hash64, keyOf, lastHash } from '../../hash.js';
import { elementBatches, parsed, plainId } from './elements.js';
import type { ToMain, ToWorker, WorkerSetup } from './first-pass.js';

const { label, fd, size, maxEventBytes } = workerData as WorkerSetup;
const port = parentPort!;
/** Hashes a post carries (512 KiB); the next post waits for the main thread to take it. */
const HASHES_PER_POST = 64 * 1024;
/** Joins and leaves a post carries at most: the main thread keeps them slim, not as parsed here. */
const CHANGES_PER_POST = 256;

let taken: (() => void) | undefined;
port.on('message', (message: ToWorker) => {
  if (message.kind === 'taken') taken!();
  else void check(message.file, message.entry);
});

function post(message: ToMain, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

async function check(file: number, entry: Extract<ToWorker, { kind: 'file' }>['entry']): Promise<void> {
  let events = 0;
  const tooLarge: [number, number][] = [];
  let words = new Uint32Array(2 * HASHES_PER_POST);
  let filled = 0;
  let changes: Extract<ToMain, { kind: 'hashes' }>['changes'] = [];
  const send = async () => {
    const sent = words.subarray(0, 2 * filled);
    post({ kind: 'hashes', file, words: sent, changes }, [sent.buffer as ArrayBuffer]);
    words = new Uint32Array(2 * HASHES_PER_POST);
    filled = 0;
    changes = [];
    await new Promise<void>((resolve) => (taken = resolve));
  };
  try {
    const stream = openEntryOnDescriptor(label, fd, size, entry);
    // Each element is dropped before the next chunk is read: its bytes are a view, not a copy.
    for await (const elements of elementBatches(label, entry.name, stream, maxEventBytes, true)) {
      events += elements.length;
      for (const element of elements) {
        if (!element.bytes) {
          tooLarge.push([element.index, element.crc32!]);
          continue;
        }
        // Most events plainly begin with their id and are no join/leave: hashed, never parsed here.
        let id = plainId(element.bytes);
        let raw: Record<string, unknown> | undefined;
        if (id === undefined) {
          const value = parsed(element.bytes);
          if (!isObject(value) || typeof value.id !== 'string') continue;
          raw = value;
          id = value.id;
        }
        hash64(id);
        words[2 * filled] = lastHash.low;
        words[2 * filled + 1] = lastHash.high;
        filled++;
        if (raw && (raw.type === 'join' || raw.type === 'leave')) changes.push({ raw, key: keyOf(lastHash.low, lastHash.high), index: element.index });
        if (filled === HASHES_PER_POST || changes.length === CHANGES_PER_POST) await send();
      }
    }
    if (filled > 0 || changes.length > 0) await send();
    post({ kind: 'checked', file, events, tooLarge });
  } catch (err) {
    post({ kind: 'failed', file, code: err instanceof PivotArchiveError ? err.code : undefined, message: errorMessage(err) });
  }
}
