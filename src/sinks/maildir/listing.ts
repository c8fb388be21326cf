import { opendir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isCode } from '../../fs-util.js';
import { dayOfName, NameHashes, type SeenNames } from './seen-names.js';

/** Base names of ours (an identity's, or a variant's), with the `:2,<flags>` a file has after it. */
export const OURS = /^(-?\d+\.P[0-9a-f]{32}(?:\.C[0-9a-f]{16})?\.pivot-archive)(:2,.*)?$/;

/** Our files in a folder's `cur/` and `new/`, as the sink's listing of them found them. */
export interface Listing {
  /** Any file of ours at all: if none, a write does not look before it publishes. */
  heldOurs: boolean;
  /**
   * Base name -> paths of our files not in the `cur/<base>:2,S` form we write: renamed by a
   * client's flag change (`:2,FS`, `:2,`) or moved to `new/`. Few; the rest are not kept.
   */
  renamed: Map<string, string[]>;
  /** The UTC days `seen` answers for: a name of another day may have been there unseen. */
  days: ReadonlySet<number>;
  /** Our `cur/<base>:2,S` names of those days, as the listing saw them; undefined when none. */
  seen?: SeenNames;
  /**
   * The identities (base names) of those days with a content-named variant file of ours, under
   * any flags; undefined when none. Few (one per corrected re-delivery): a delivery looks for
   * its own variant only where this names its identity.
   */
  variants?: Set<string>;
}

/** Where a base name of ours (`OURS`) has its variant's `.C<hash>`: the only upper-case C in it. */
const VARIANT_MARK = '.C';

/**
 * Our files in a folder's `cur/` and `new/`, as one listing of each finds them: the sub-folder,
 * the file's name, its base name (before `:2,`) and its `:2,<flags>` suffix. `missingIsEmpty`: a
 * sub-folder that is not there holds nothing (a reader's view; the sink made them).
 */
export async function* ourFiles(folder: string, missingIsEmpty = false): AsyncGenerator<{ sub: 'cur' | 'new'; name: string; base: string; flags?: string }> {
  for (const sub of ['cur', 'new'] as const) {
    let dir;
    try {
      dir = await opendir(join(folder, sub), { bufferSize: 1024 });
    } catch (err) {
      if (missingIsEmpty && (isCode(err, 'ENOENT') || isCode(err, 'ENOTDIR'))) continue;
      throw err;
    }
    for await (const entry of dir) {
      const match = OURS.exec(entry.name);
      if (match) yield { sub, name: entry.name, base: match[1]!, flags: match[2] };
    }
  }
}

/** Listings of one folder made at most, while it keeps changing as it is read. */
const MAX_PASSES = 4;

/**
 * A directory changed this long before a listing began cannot have changed since unnoticed:
 * the kernel stamps a change with a clock that lags by a tick (1-10 ms), so a change just after
 * the first look could carry the same stamp as one just before it.
 */
const STAMP_TICK_NS = 50_000_000n;

/** When `cur/` and `new/` last changed (a name made, removed or renamed in either). */
async function changed(folder: string): Promise<bigint[]> {
  return Promise.all(['cur', 'new'].map(async (sub) => (await stat(join(folder, sub), { bigint: true })).mtimeNs));
}

/**
 * The folder's `Listing` for `days` (see `Listing.days`). `neighbours`: a day either side of a
 * single day joins `days` when the folder holds no name of ours of it (a daily export of another
 * time zone spans two UTC days; a name of an empty day can only be one written since). `made`:
 * its `cur/` and `new/` were made just now, so held nothing of ours before (one pass is enough).
 *
 * A file renamed while a directory is read can be missed under both of its names (ext4 reads in
 * hash order: the old name removed ahead of the read, the new one put behind it; measured, 18 of
 * 60 tries with a renamer running). So a listing during which `cur/` or `new/` changed is made
 * again, keeping what every pass found, up to MAX_PASSES passes.
 */
export async function listOurs(folder: string, days: ReadonlySet<number>, { neighbours = false, made = false } = {}): Promise<Listing> {
  const renamed = new Map<string, string[]>();
  const seen = new NameHashes();
  const [day] = days;
  const held = new Set<number>();
  const variants = new Set<string>();
  let heldOurs = false;
  for (let pass = 1; ; pass++) {
    const before = await changed(folder);
    const began = BigInt(Date.now()) * 1_000_000n;
    for await (const { sub, name, base, flags } of ourFiles(folder)) {
      heldOurs = true;
      const of = dayOfName(base);
      if (neighbours && (of === day! - 1 || of === day! + 1)) held.add(of);
      const mark = base.indexOf(VARIANT_MARK);
      if (mark >= 0 && days.has(of)) variants.add(`${base.slice(0, mark)}.pivot-archive`);
      if (sub === 'cur' && flags === ':2,S') {
        if (days.has(of)) seen.push(base);
        continue;
      }
      const path = join(folder, sub, name);
      const paths = renamed.get(base);
      if (!paths) renamed.set(base, [path]);
      else if (!paths.includes(path)) paths.push(path);
    }
    const after = await changed(folder);
    const still = before.every((stamp, i) => stamp === after[i] && (made || stamp < began - STAMP_TICK_NS));
    if (still || pass === MAX_PASSES) break;
  }
  let covered = days;
  if (neighbours) {
    covered = new Set(days);
    for (const other of [day! - 1, day! + 1]) if (!held.has(other)) (covered as Set<number>).add(other);
  }
  return { heldOurs, renamed, days: covered, seen: seen.filter((Math.random() * 2 ** 32) >>> 0), variants: variants.size > 0 ? variants : undefined };
}
