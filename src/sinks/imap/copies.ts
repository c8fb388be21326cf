// Two runs at once into one folder (see SPEC.md, "Two writers at once"): what a run appended, and
// which copies of its items it removes when it closes.

/**
 * What this run appended to one mailbox's folder: the UTC days of its items and the UIDs the
 * server gave them (APPENDUID), kept as runs of consecutive UIDs (a run's appends mostly are), so
 * a day of any size costs a few numbers a mailbox.
 */
export class Appended {
  readonly days = new Set<number>();
  /** [first, last] UID pairs, in the order appended. */
  private readonly ranges: number[] = [];
  /** Another writer's message came up in the folder during the run: copies may have raced. */
  othersSeen = false;
  /**
   * UIDs this run appended as a version beside another of its identity (see SPEC.md, "Corrected
   * versions"): never removed as a copy when the sink closes, whatever the listing then groups by.
   */
  readonly versions = new Set<number>();
  /**
   * Versions this run appended beside another and has not read back yet (see index.ts
   * `checkVersions`), by UID: the identity, the version's number (see index.ts `Copies`) and the
   * sha256 of the bytes appended. Not known to the presence until read back as kept; one left here (the read-back's
   * connection failed) is read back by the mailbox's next batch, or when the sink closes, and
   * removed if the server rewrote it.
   */
  readonly probes = new Map<number, { key: string; which: number; sha256: string }>();

  constructor(
    readonly folder: string,
    readonly uidValidity: bigint,
  ) {}

  add(day: number, uid: number): void {
    this.days.add(day);
    const last = this.ranges.length - 1;
    if (last > 0 && this.ranges[last] === uid - 1) this.ranges[last] = uid;
    else this.ranges.push(uid, uid);
  }

  has(uid: number): boolean {
    for (let i = 0; i < this.ranges.length; i += 2) if (uid >= this.ranges[i]! && uid <= this.ranges[i + 1]!) return true;
    return false;
  }
}

/**
 * The UIDs to remove from a folder's listing (UID to version: the identity and which version,
 * see index.ts `Copies`, when `byVersion`; else UID to the identity alone): of each version
 * held more than once where one copy is this run's, every copy but the one with the least UID,
 * whoever appended it. Other versions of an identity (a corrected re-delivery stored beside the
 * first) are never removed: each keeps its least copy. Listed by identity alone (the server's sizes
 * proved inexact, or it rewrites messages, after a version was stored), an identity's versions
 * fall in one group, so a UID this run appended as a version (`Appended.versions`) is not removed
 * there; listed by version, its group holds copies of that version only, and it is a copy like any
 * other (two writers that stored the same corrected version would otherwise each keep theirs).
 * Writers that each do this leave one copy: none removes the least one, and the last to close sees
 * them all. An APPEND is atomic, so every copy listed is whole.
 */
export function extraCopies(listed: ReadonlyMap<number, string>, ours: Appended, byVersion = false): number[] {
  const byKey = new Map<string, number[]>();
  for (const [uid, key] of listed) {
    const uids = byKey.get(key);
    if (uids) uids.push(uid);
    else byKey.set(key, [uid]);
  }
  const extra: number[] = [];
  for (const uids of byKey.values()) {
    if (uids.length < 2 || !uids.some((uid) => ours.has(uid))) continue;
    const least = Math.min(...uids);
    // Grouped by identity alone, a version this run stored beside another would be taken for a copy of it.
    extra.push(...uids.filter((uid) => uid !== least && (byVersion || !ours.versions.has(uid))));
  }
  return extra;
}
