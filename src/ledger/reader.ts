import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { errorMessage } from '../errors.js';
import { sha256Hex } from '../hash.js';
import type { LedgerCheck } from './account.js';
import { openNote, type VerifierKey } from './note.js';
import { GENESIS, originOf, type LedgerLine } from './writer.js';

/** A copy of a checkpoint note kept elsewhere (off the host), and where it came from. */
export interface CheckpointCopy {
  name: string;
  note: string;
}

/** Reads checkpoint copies given by path. */
export async function readCheckpointCopies(paths: string[]): Promise<CheckpointCopy[]> {
  return Promise.all(paths.map(async (name) => ({ name, note: await readFile(name, 'utf8') })));
}

/**
 * Reads the ledger once from the start, checking as it goes (src/ledger/SPEC.md): every line a
 * record, numbered in order, holding the sha256 of the line before; every checkpoint naming the
 * size and head the ledger had there, its note saying the same and its signature made by `key`;
 * every checkpoint copy (kept off the host) matching the ledger at its size, so a ledger cut
 * short, even by whole runs, is found. `visit` sees every record that parsed, in order. `notes`
 * says what it found that is no failure: a run that ended without its checkpoint (killed between
 * its summary and its checkpoint) and was followed by another run is unsealed, sealed by the next
 * checkpoint, as any killed run is.
 */
export async function checkLedger(
  path: string,
  options: { key?: VerifierKey; copies?: CheckpointCopy[]; ownNoteMissing?: string },
  visit: (line: LedgerLine) => void = () => undefined,
): Promise<LedgerCheck> {
  const problems: string[] = [];
  const problem = (text: string) => {
    if (problems.length < 100) problems.push(text);
    else if (problems.length === 100) problems.push('... (more problems not listed)');
  };
  /** Hash of the line at each checkpoint copy's size, to compare once read. */
  const wanted = new Map<number, string>();
  const copies = (options.copies ?? []).map((c) => ({ ...c, ...openNote(c.note, options.key) }));
  /** The checkpoint records found: size -> head. */
  const sealedAt = new Map<number, string>();
  /** The run being read, and whether it ended (summary or failure) and was sealed. */
  let run: { runId: string; ended: boolean; sealed: boolean } | undefined;
  /** What the check found that is no failure: runs sealed by a later run's checkpoint. */
  const notes: string[] = [];
  /** Runs that ended without their checkpoint and were followed by another run: the next checkpoint seals them. */
  let awaitingSeal: string[] = [];
  /** A run that ended without its checkpoint: unsealed (a run killed between its summary and its checkpoint), sealed by the next checkpoint. */
  const endedUnsealed = () => {
    if (run?.ended && !run.sealed) awaitingSeal.push(run.runId);
  };
  /** The ledger's last run ended without its checkpoint, and nothing follows it. */
  const unsealedEnd = () => {
    if (run?.ended && !run.sealed) {
      chainIntact = false;
      problem(
        `run ${run.runId} ended but no checkpoint follows it: records were added after it, or its checkpoint was removed (or could not be written: a run killed between its summary and its checkpoint, whose records the next run's checkpoint seals)`,
      );
    }
  };
  for (const c of copies) if (c.body) wanted.set(c.body.size, '');
  let seq = 0;
  let head = GENESIS;
  let origin: string | undefined;
  let checkpoints = 0;
  let lastCheckpointAt = 0;
  let lastSignature: LedgerCheck['signature'] = 'unsigned';
  let failedSignatures = 0;
  let chainIntact = true;
  for (const c of copies) {
    if (c.body) continue;
    chainIntact = false;
    problem(`checkpoint copy ${c.name} is not a checkpoint note (a failed copy job, or overwritten): it protects nothing`);
  }
  let complete: { complete: number; torn: boolean };
  try {
    complete = await completeLength(path);
  } catch (err) {
    return { path, records: 0, head: GENESIS, chainIntact: false, checkpoints: 0, signature: 'failed', unsealed: 0, problems: [`ledger ${path} cannot be read: ${errorMessage(err)}`], notes: [] };
  }
  const torn = complete.torn;
  // A line a crash cut short is not read as a record (the next run cuts it off); it is reported.
  const lines = complete.complete === 0 ? [] : createInterface({ input: createReadStream(path, { end: complete.complete - 1 }), crlfDelay: Infinity });
  let index = 0;
  for await (const line of lines) {
    const n = index++;
    let record: LedgerLine;
    try {
      record = JSON.parse(line) as LedgerLine;
      if (typeof record !== 'object' || record === null || typeof record.seq !== 'number' || typeof record.prev !== 'string') throw new Error('not a record');
    } catch {
      chainIntact = false;
      problem(`line ${n + 1}: not a ledger record`);
      head = sha256Hex(line);
      seq = n + 1;
      continue;
    }
    if (record.seq !== n) {
      chainIntact = false;
      problem(`line ${n + 1}: numbered ${record.seq} (records removed, added or re-ordered)`);
    }
    if (record.prev !== head) {
      chainIntact = false;
      problem(`line ${n + 1} (${record.record}, seq ${record.seq}): does not hold the hash of the line before (that line was changed, removed or moved)`);
    }
    if (record.record === 'start') {
      endedUnsealed();
      run = { runId: record.runId, ended: false, sealed: false };
    } else if ((record.record === 'summary' || record.record === 'failure') && run?.runId === record.runId) run.ended = true;
    if (record.record === 'checkpoint') {
      checkpoints++;
      if (run) run.sealed = true;
      for (const runId of awaitingSeal) notes.push(`run ${runId} ended without its checkpoint (killed between its summary and its checkpoint): its records are sealed by the next checkpoint, line ${n + 1}`);
      awaitingSeal = [];
      sealedAt.set(n, head);
      lastCheckpointAt = n + 1;
      const opened = openNote(record.note, options.key);
      const body = opened.body;
      if (record.size !== n || record.head !== head || !body || body.size !== n || body.head !== head || body.time !== record.at || (origin !== undefined && body.origin !== origin)) {
        chainIntact = false;
        problem(`line ${n + 1}: checkpoint does not match the ledger before it (size ${record.size}, head ${record.head.slice(0, 12)}...)`);
      }
      if (opened.signature === 'failed') {
        failedSignatures++;
        problem(`line ${n + 1}: checkpoint signature does not verify with the given public key`);
      }
      lastSignature = opened.signature;
    }
    head = sha256Hex(line);
    origin ??= originOf(head);
    seq = n + 1;
    if (wanted.has(seq)) wanted.set(seq, head);
    visit(record);
  }
  for (const runId of awaitingSeal) notes.push(`run ${runId} ended without its checkpoint (killed between its summary and its checkpoint): its records are not sealed yet; the next run's checkpoint seals them`);
  unsealedEnd();
  if (options.ownNoteMissing && checkpoints > 0) {
    chainIntact = false;
    // One checkpoint, the last line: also what a run killed between its checkpoint and the note leaves
    // (its first). It cannot be told from a ledger cut back to its first run with the note removed.
    const firstKilled = checkpoints === 1 && lastCheckpointAt === seq ? ', or the run that wrote its only checkpoint was killed before it wrote the note: compare with the copies kept off the host; the next run writes the note' : '';
    problem(`${options.ownNoteMissing} is missing though the ledger holds checkpoints (removed? compare with the copies kept off the host${firstKilled})`);
  }
  for (const c of copies) {
    if (!c.body) continue;
    const at = wanted.get(c.body.size);
    if (c.body.size > seq) {
      chainIntact = false;
      problem(`checkpoint copy ${c.name} covers ${c.body.size} records, the ledger holds ${seq}: records were cut from its end`);
    } else if (at !== c.body.head) {
      chainIntact = false;
      problem(`checkpoint copy ${c.name}: the ledger's record ${c.body.size} is not the one it covers (the ledger was rewritten)`);
    } else if (sealedAt.get(c.body.size) !== c.body.head) {
      chainIntact = false;
      problem(`checkpoint copy ${c.name}: the ledger has no checkpoint at record ${c.body.size} any more (its checkpoint record was removed)`);
    } else if (origin !== undefined && c.body.origin !== origin) {
      chainIntact = false;
      problem(`checkpoint copy ${c.name} is of another ledger (${c.body.origin})`);
    }
    if (c.signature === 'failed') {
      failedSignatures++;
      problem(`checkpoint copy ${c.name}: signature does not verify with the given public key`);
    }
  }
  if (torn) problem('the last line is cut short (a crash while writing); the next run cuts it off and records that');
  let signature = lastSignature;
  if (failedSignatures > 0) signature = 'failed';
  else if (options.key && checkpoints > 0 && lastSignature === 'unsigned') {
    signature = 'failed';
    problem('the last checkpoint is not signed, though a public key was given (written without --signing-key, or rewritten)');
  } else if (options.key && checkpoints === 0) {
    signature = 'failed';
    problem('the ledger holds no checkpoint to verify a signature on (its first run was killed, or the checkpoints were removed)');
  }
  if (options.key && seq - lastCheckpointAt > 0) problem(`${seq - lastCheckpointAt} records after the last checkpoint are not covered by a signature (a run killed or running; the next run seals them)`);
  return { path, records: seq, head, chainIntact, checkpoints, signature, unsealed: seq - lastCheckpointAt, problems, notes };
}

/** Bytes up to and with the last newline, and whether anything follows it (a line a crash cut short). */
async function completeLength(path: string): Promise<{ complete: number; torn: boolean }> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    for (let end = size; end > 0; ) {
      const from = Math.max(0, end - 65536);
      const chunk = Buffer.alloc(end - from);
      await handle.read(chunk, 0, chunk.length, from);
      const newline = chunk.lastIndexOf(0x0a);
      if (newline >= 0) return { complete: from + newline + 1, torn: from + newline + 1 < size };
      end = from;
    }
    return { complete: 0, torn: size > 0 };
  } finally {
    await handle.close();
  }
}

/** Every record of the ledger in order, parsed and unchecked (a second pass after `checkLedger`); lines that do not parse are passed over. */
export async function* ledgerRecords(path: string): AsyncGenerator<LedgerLine> {
  const { complete } = await completeLength(path);
  if (complete === 0) return;
  for await (const line of createInterface({ input: createReadStream(path, { end: complete - 1 }), crlfDelay: Infinity })) {
    try {
      yield JSON.parse(line) as LedgerLine;
    } catch {
      // Reported by checkLedger.
    }
  }
}
