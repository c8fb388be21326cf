import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EventPosition } from '../model.js';
import type { PluginSplits } from '../pipeline/recorder.js';
import type { PivotExportArchive } from '../sources/pivot-zip/index.js';
import type { StatusLog } from '../status-log.js';
import { sha256Hex } from '../hash.js';
import { ErrorCode, PivotArchiveError, errorMessage } from '../errors.js';
import { isObject } from '../formats/pivot-export/event.js';
import { STATE_FOLDERS, StateDir } from './index.js';

/**
 * The sink's side of the folders a checkpoint keeps (Sink.foldersToLook, Sink.resumeFolders): the
 * folders of the items it skips are looked at by the run that resumes, so one deleted between the
 * runs is found, not passed over with the items it held.
 */
export interface CheckpointFolders {
  /** Takes an earlier run's folders; false when they are not of the sink's form. */
  resume(folders: Record<string, unknown>): boolean;
  /** The folders to keep now (undefined: the sink keeps none); the same object while they have not changed. */
  current(): Record<string, unknown> | undefined;
}

/** Saved at most every second, and no more often than a millisecond per KB of the last save (folders of 10,000 mailboxes: megabytes). */
const SAVE_EVERY_MS = 1000;

/** The sink an outcome options' JSON names (undefined when it is not such JSON). */
function sinkOf(options: string): unknown {
  try {
    const parsed: unknown = JSON.parse(options);
    return isObject(parsed) ? parsed.sink : undefined;
  } catch {
    return undefined;
  }
}

/** A checkpoint at the first event skips nothing (one kept only for its folders, see `finish`). */
export const resumesNothing = (at: EventPosition) => at.file === 0 && at.index === 0;

export function comparePositions(a: EventPosition, b: EventPosition): number {
  return a.file - b.file || a.index - b.index;
}

/**
 * Where a killed or stopped run of an archive got to: every event before `resumeAt` is settled
 * (delivered, skipped or rejected, and its status lines written), so the next run skips them.
 * Kept in memory as one position, on disk as one small file; removed once the archive completes.
 * It keeps the items plugins added to the events before it too: the next run's plugins never see them.
 */
export class Checkpoint implements PluginSplits {
  private candidate: EventPosition | null = null;
  /** Items plugins added before the candidate, with those added before `resumeAt`. */
  private addedBefore: number;
  /** Ids plugins gave items before the candidate (other than their events'), with those given before `resumeAt`. */
  private readonly idsGivenBefore: string[];
  /** This run's splits not yet before the candidate, in stream order. */
  private readonly splits: { position: EventPosition; added: number; idsGiven: readonly string[] }[] = [];
  private frozen = false;
  /** A storage fault removed the checkpoint: nothing is saved for this run. */
  private removed = false;
  /** Why the removal failed (the state dir on the failing disk too). */
  private notRemoved: unknown;
  private lastSave = Date.now();
  /** Bytes of the last save: a large one is saved less often (SAVE_EVERY_MS). */
  private lastSaveBytes = 0;
  /** The folders last saved and their JSON: unchanged, not serialised again. */
  private savedFolders?: { of: Record<string, unknown>; json: string };
  private saving: Promise<void> = Promise.resolve();
  /** The first save that failed: no further one is tried; the run ends with it as its error. */
  private failed: unknown;

  private constructor(
    private readonly path: string,
    readonly resumeAt: EventPosition | null,
    /** Items plugins added to the events before `resumeAt` (when an earlier run split them). */
    readonly addedEarlier: number,
    /** Ids plugins gave items of the events before `resumeAt`, other than those events' own. */
    readonly idsGivenEarlier: readonly string[],
    private readonly statusLog: StatusLog,
    private readonly options: string,
    /** Why an earlier run's checkpoint was set aside (made with other options, or folders the sink cannot take), if it was. */
    readonly discarded: string | undefined,
    private readonly folders: CheckpointFolders | undefined,
  ) {
    this.addedBefore = addedEarlier;
    this.idsGivenBefore = [...idsGivenEarlier];
  }

  /**
   * The archive's identity: its export id and the sha256 of the whole file (the same export
   * delivered again with users.json corrected holds the same messages files, yet its items go to
   * other mailboxes: resuming it skipped them). A checkpoint is used only under the outcome
   * `options` it was made with (the items it skips were
   * settled under them: rejected `unmapped` under a mistyped --domain, say); else the run starts at
   * the beginning, and the sink skips what it holds. With `resume` false the run reads from the
   * start all the same (what it settles still moves the checkpoint). The folders it keeps go to
   * the sink (`folders`) before the first write; ones the sink cannot take set the checkpoint aside.
   */
  static async load(stateDir: string, archive: PivotExportArchive, statusLog: StatusLog, options: Record<string, unknown>, resume = true, folders?: CheckpointFolders): Promise<Checkpoint> {
    const identity = `${archive.manifest.exportId}\n${archive.sha256}`;
    const dir = join(stateDir, STATE_FOLDERS.checkpoints);
    // A folder that cannot be made (a full or read-only disk) is the state dir's fault, said as such: not a bug (exit 70)
    // that the drop folder blamed on each archive in turn, moving every one to failed/.
    await new StateDir(stateDir).makeDirectory(dir);
    const path = join(dir, `${sha256Hex(identity)}.json`);
    const current = JSON.stringify(options);
    let saved: { resumeAt?: EventPosition; options?: string; addedByPlugins?: number; idsGivenByPlugins?: unknown; folders?: unknown } | undefined;
    try {
      saved = JSON.parse(await readFile(path, 'utf8')) as typeof saved;
    } catch {
      // No checkpoint (or a torn one, which rename makes impossible): start at the beginning.
    }
    const sameOptions = resume && saved?.resumeAt !== undefined && saved.options === current;
    // One without folders, for a sink that keeps them, is from before they were kept (2026-12-02): its runs' folders are unknown.
    const kept = saved?.folders;
    const wanted = folders?.current() !== undefined;
    // Set aside for other options (a plugin added, a domain fixed), its folders are still the same sink's, looked at all the same: one deleted since is found.
    const sameSink = saved?.options !== undefined && sinkOf(saved.options) === sinkOf(current);
    const foldersTaken = sameOptions ? (kept === undefined ? !wanted : isObject(kept) && folders?.resume(kept) === true) : sameSink && isObject(kept) && folders?.resume(kept) === true;
    const usable = sameOptions && foldersTaken;
    // A checkpoint from before plugins' added items were kept in it counts none, as it did.
    const addedEarlier = usable ? (saved!.addedByPlugins ?? 0) : 0;
    // One from before they were kept (2026-12-02) gives none: a duplicate of an id given before it is delivered, as it was.
    const given = usable && Array.isArray(saved!.idsGivenByPlugins) ? saved!.idsGivenByPlugins.filter((id): id is string => typeof id === 'string') : [];
    const discarded = !resume || saved === undefined || usable ? undefined : !sameOptions ? 'was made with other options' : kept === undefined ? 'keeps none of the folders its runs wrote to (an earlier version saved it)' : 'keeps folders the sink cannot take';
    return new Checkpoint(path, usable ? saved!.resumeAt! : null, addedEarlier, given, statusLog, current, discarded, folders);
  }

  /** Events are skipped when an earlier run settled them. */
  done(position: EventPosition): boolean {
    return this.resumeAt !== null && comparePositions(position, this.resumeAt) < 0;
  }

  /** Plugins made `added` more items of the event at `position`, and gave some ids other than the event's (told before they settle); a frozen checkpoint never gets past them. */
  split(position: EventPosition, added: number, idsGiven: readonly string[]): void {
    if (!this.frozen) this.splits.push({ position, added, idsGiven });
  }

  /**
   * Called in stream order as elements settle. Everything before `position` is settled; a
   * failed delivery freezes the checkpoint, so the next run retries from there. A storage fault
   * removes it: what the storage answered stored before it may be lost, so the next run reads
   * the archive from the start and the sink looks for every item.
   */
  settled(position: EventPosition, ok: boolean, storageFault = false): void {
    if (storageFault) this.storageLost();
    if (this.frozen) return;
    this.candidate = position;
    while (this.splits.length > 0 && comparePositions(this.splits[0]!.position, position) < 0) {
      const { added, idsGiven } = this.splits.shift()!;
      this.addedBefore += added;
      for (const id of idsGiven) this.idsGivenBefore.push(id);
    }
    if (!ok) this.frozen = true;
    // Before anything is settled there is nothing to resume from: no save is due yet.
    if (resumesNothing(position)) return;
    if (Date.now() - this.lastSave >= Math.max(SAVE_EVERY_MS, this.lastSaveBytes / 1024) && this.failed === undefined) {
      this.lastSave = Date.now();
      // A checkpoint that cannot be saved costs only a longer re-run: the run goes on, and ends with the error (exit 1).
      this.saving = this.saving.then(() => this.save()).catch((err: unknown) => void (this.failed ??= err));
    }
  }

  /**
   * A delivery failed as failing storage does (see `settled`), told as soon as it failed, not in
   * stream order: the sink may have forgotten the folder it lost already, so no checkpoint may be
   * saved from now on (one saved while earlier items settle would leave that folder out).
   */
  storageLost(): void {
    if (this.removed) return;
    this.removed = this.frozen = true;
    this.saving = this.saving.then(() => this.remove());
  }

  /**
   * After the run: removed when the whole archive settled cleanly, else saved for the next run.
   * When what the sink stored may be lost or is not confirmed in place (`fromStart`: the summary's
   * `storageLost`, `lookStopped`), the next run reads from the start, but still looks at the folders
   * of this run and those it resumed (all but `lostMailboxes`, the ones the look found gone, which
   * the summary names): one deleted while the look was cut short or could not be made is then
   * found by its first write there, as storage lost, which counts for every export with messages there.
   */
  async finish(complete: boolean, fromStart = false, lostMailboxes: readonly string[] = []): Promise<void> {
    await this.saving;
    if (complete) await unlink(this.path).catch(() => undefined);
    // One left in place would have the next run resume past items not confirmed in the store.
    else if (fromStart) await this.keepFoldersOnly(lostMailboxes);
    else if (this.failed === undefined && !this.removed) await this.save();
    if (this.notRemoved !== undefined) {
      throw new PivotArchiveError(ErrorCode.STATUS_LOG, `the checkpoint ${this.path} could not be removed after a storage fault or a look at the store cut short (${errorMessage(this.notRemoved)}): remove it by hand before the re-run, so that it reads the archive from the start`, { cause: this.notRemoved });
    }
    if (this.failed !== undefined) throw new PivotArchiveError(ErrorCode.STATUS_LOG, `the checkpoint ${this.path} cannot be saved (a re-run reads the archive from an earlier point): ${errorMessage(this.failed)}`, { cause: this.failed });
  }

  /**
   * A checkpoint that resumes nothing (the next run reads from the start) and keeps the folders to
   * look at, less `lostMailboxes`; removed instead when a write found storage lost (the sink may have
   * forgotten the folder it lost: that failure names its mailbox) or there are none.
   */
  private async keepFoldersOnly(lostMailboxes: readonly string[]): Promise<void> {
    const current = this.removed ? undefined : this.folders?.current();
    // A set: at 10,000 mailboxes a list's includes() per folder is 10^8 comparisons.
    const lost = new Set(lostMailboxes);
    const folders = current && Object.fromEntries(Object.entries(current).filter(([mailbox]) => !lost.has(mailbox)));
    if (!folders || Object.keys(folders).length === 0) return this.remove();
    try {
      await this.write(JSON.stringify({ resumeAt: { file: 0, index: 0 }, addedByPlugins: 0, options: this.options, savedAt: new Date().toISOString(), folders }) + '\n');
    } catch (err) {
      this.failed ??= err;
    }
  }

  /** Removes the checkpoint the next run must not resume from; a failure other than its absence is kept for `finish` to throw. */
  private async remove(): Promise<void> {
    await unlink(this.path).catch((err: unknown) => void ((err as NodeJS.ErrnoException).code === 'ENOENT' || (this.notRemoved ??= err)));
  }

  private async save(): Promise<void> {
    const at = this.candidate;
    const added = this.addedBefore;
    const idsGiven = this.idsGivenBefore.length;
    // One that resumes nothing is not worth a file (with group commit the first event settles alone, early).
    if (!at || resumesNothing(at)) return;
    // The status lines of everything before `at` must be on disk before the checkpoint says so.
    await this.statusLog.flush();
    // Taken after the status lines: every item before `at` was written, so its folder is among them.
    const folders = this.folders?.current();
    // Storage lost meanwhile: the folders may lack the one lost.
    if (this.removed) return;
    if (folders && this.savedFolders?.of !== folders) this.savedFolders = { of: folders, json: JSON.stringify(folders) };
    const text = JSON.stringify({ resumeAt: at, addedByPlugins: added, ...(idsGiven > 0 ? { idsGivenByPlugins: this.idsGivenBefore.slice(0, idsGiven) } : {}), options: this.options, savedAt: new Date().toISOString() });
    const whole = folders ? `${text.slice(0, -1)},"folders":${this.savedFolders!.json}}\n` : `${text}\n`;
    this.lastSaveBytes = whole.length;
    await this.write(whole);
  }

  /** The checkpoint's file replaced whole by `text` (a rename: never torn). */
  private async write(text: string): Promise<void> {
    await writeFile(`${this.path}.tmp`, text);
    await rename(`${this.path}.tmp`, this.path);
  }
}
