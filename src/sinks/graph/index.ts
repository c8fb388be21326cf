import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import { entraTokens, tokenRoles, type AccessTokens } from '../../auth/entra.js';
import type { Delivery } from '../../model.js';
import { firstFew, LOOK_STOPPED, MAILBOX_ADDRESS, markStorageLost, RESUMED_FOLDER_NOTE, type FoldersToLook, type LostSinceWritten, type Sink, type SinkFactory, type SinkOptions, type Stored } from '../sink.js';
import { LifecycleSink, SinkLifecycle } from '../lifecycle.js';
import { GraphClient, GraphError, UncertainError, folderAnswer404, mailboxUnusable, type GraphResponse } from './client.js';
import { parseGraphSpec, type GraphSinkConfig } from './config.js';
import { dayOf, dayWindow, eachInFolder, graphLocation, halfCreated, identity, listFolder, listMessages, odataString, resolveFolder, listedIdentity, listedOf, listedKey, standsFor, versionKey, versionOf, type FolderAnswer, type Listed, type PlacedFolder } from './mailbox.js';
import { ATTACHMENT_MAX, attachmentRequestBytes, CHUNK_BYTES, fileAttachmentJson, graphMessage, REQUEST_BODY_MAX, STAMP_PROPERTY, UPLOAD_SESSION_MIN, type FileAttachment } from './message.js';
import { createGraphReader } from './reader.js';
import { CreateBatches } from './batch.js';
import { idKey } from '../../hash.js';
import { messageVersion } from '../../formats/message/export-id.js';
import { eachLimited } from '../held.js';
import { graphSinkClosed, graphSinkOpened } from './heap.js';
import { stoppableSleep } from '../stoppable-sleep.js';

/** The mailbox `open()` asks for when no `probe=` names one: no tenant holds it (`.invalid`, RFC 6761). */
export const PROBE_MAILBOX = 'pivot-archive-credential-check@invalid';
/** Attempts `open()` makes at most to reach Graph. */
const OPEN_RETRIES = 2;
/**
 * Retries at least of each page of the look-up after a lost answer: only it knows whether the
 * item is stored, so a throttled or failing Graph is waited out longer than for other requests
 * (each wait as Retry-After or the backoff says: some minutes in all at the default retryDelay).
 */
const LOST_ANSWER_LOOK_UP_RETRIES = 12;
/** Pages (of 1000) a look-up by Message-ID reads at most: more copies of one Message-ID fail the item rather than page without end. */
const LOOK_UP_PAGES = 20;

/** What the sink knows of one mailbox for the run. */
interface MailboxRun {
  /** The folder's id, resolved (and created) once. */
  folder?: Promise<string>;
  /** Where the folder resolved is, its path's folders below a well-known one (`resolveFolder`): checked once the last write settled (`lostSinceWritten`). */
  placed?: PlacedFolder[];
  /** The sink created the folder in this run: it held nothing, so no day needs listing. */
  fresh?: boolean;
  /** What the folder holds, per UTC day of sentAt, listed once. */
  days: Map<number, Promise<DayListing>>;
  /** Items being stored now, by identity and version (`versionKey`): a second copy waits for the first. */
  storing: Map<string, Promise<string>>;
  /**
   * What this run created, per UTC day: the 53-bit keys of their identities and versions (`idKey`, 8 bytes a
   * delivery, not the strings and Graph ids: a day of millions of deliveries must fit). A hit is
   * confirmed by asking Graph; checked for copies another writer made at the same time when the
   * sink closes.
   */
  created: Map<number, Set<number>>;
  /** Why the mailbox cannot be delivered to at all (unknown user, no mailbox): its items fail at once. */
  unusable?: string;
  /** A second look after Graph first said the mailbox is unusable (one such answer may be a blip). */
  confirming?: Promise<boolean>;
  /** `/v1.0/users/<mailbox>`, made once. */
  user: string;
  /** The paths and location of the folder last resolved (see `at`), made once rather than per item. */
  at?: FolderPaths;
  /** Folder id -> whether Graph says it is gone (asked once, after a 404 of a request into it). */
  goneChecks?: Map<string, Promise<boolean>>;
}

/** What every item of one mailbox's folder uses: the create's path, and its locations' start. */
interface FolderPaths {
  folderId: string;
  /** `/v1.0/users/<mailbox>/mailFolders/<folder id>/messages` */
  messages: string;
  /** `<mailbox>/<folder id>/`: a location without its message id (`graphLocation`). */
  location: string;
}

/** The paths of `folderId`, kept in `run` (a folder resolved again is most often the same). */
function folderPaths(run: MailboxRun, mailbox: string, folderId: string): FolderPaths {
  let at = run.at;
  if (at === undefined || at.folderId !== folderId) {
    const location = graphLocation(mailbox, folderId, '');
    run.at = at = { folderId, messages: `${run.user}/mailFolders/${encodeURIComponent(folderId)}/messages`, location };
  }
  return at;
}

/** What a message's create needs, made once for all its mailboxes. */
interface Built {
  sentAt: number;
  /** Attachments added after the create. */
  later: FileAttachment[];
  stamp: string;
  /** The create request's body (JSON). */
  body: Buffer;
}

/**
 * One UTC day of a folder, as listed: per version of an item (`versionKey`: a corrected
 * re-delivery is another version, stored beside the first) the copy a write skips to, and whole
 * copies beyond it.
 */
interface DayListing {
  /** Version -> its whole copy with the least id (a half-created one when none is whole). */
  held: Map<string, Listed>;
  /** Version -> its other whole copies (a run killed before its close removed them): removed when the item is met. */
  extra: Map<string, Listed[]>;
  /** Identity -> the versions (`versionOf`) `held` has of it. */
  versions: Map<string, string[]>;
}


/** The order in which copies of one item are kept: the least id first, whoever made them (so writers that each remove the rest agree). */
const leastIdFirst = (a: Listed, b: Listed) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function dayListing(messages: readonly Listed[]): DayListing {
  const copies = new Map<string, Listed[]>();
  for (const m of messages) {
    const key = listedKey(m);
    const same = copies.get(key);
    if (same) same.push(m);
    else copies.set(key, [m]);
  }
  const listing: DayListing = { held: new Map(), extra: new Map(), versions: new Map() };
  for (const [key, same] of copies) {
    const whole = same.filter((m) => !halfCreated(m)).sort(leastIdFirst);
    listing.held.set(key, whole[0] ?? same[0]!);
    if (whole.length > 1) listing.extra.set(key, whole.slice(1));
    const item = listedIdentity(same[0]!);
    const versions = listing.versions.get(item);
    if (versions) versions.push(versionOf(same[0]!));
    else listing.versions.set(item, [versionOf(same[0]!)]);
  }
  return listing;
}

/**
 * Of messages of one item, the one a delivery of `version` is: its own version's, else one that
 * stands for it (`standsFor`: one whose version cannot be told); whole before half-created, then
 * the least id.
 */
function copyFor(same: readonly Listed[], version: string): Listed | undefined {
  const own = (m: Listed) => Number(versionOf(m) === version);
  const whole = (m: Listed) => Number(!halfCreated(m));
  return same.filter((m) => standsFor(versionOf(m), version)).sort((a, b) => own(b) - own(a) || whole(b) - whole(a) || leastIdFirst(a, b))[0];
}

/** The key in `listing.held` of the copy a delivery of `version` is (`copyFor`), if the day holds one. */
function heldKeyFor(listing: DayListing, messageId: string, sentAt: number, version: string): string | undefined {
  // A day that holds nothing (every day of a folder this run made): nothing to look for.
  if (listing.versions.size === 0) return undefined;
  const held = (listing.versions.get(identity(messageId, sentAt)) ?? []).flatMap((v) => listing.held.get(versionKey(messageId, sentAt, v)) ?? []);
  const copy = copyFor(held, version);
  return copy && listedKey(copy);
}

const IMPORT_PERMISSION = 'Mail-Advanced.ReadWrite.All';

/** The tokens and the client of a spec, shared by the sink and the reader. */
export function graphAccess(config: GraphSinkConfig, stop?: AbortSignal): { tokens: AccessTokens; client: GraphClient } {
  const tokens = entraTokens(config.credential, { authorityHost: config.authorityHost, scope: `${config.graphEndpoint}/.default`, describe: `Graph sink ${config.description}` });
  const client = new GraphClient({
    endpoint: config.graphEndpoint,
    concurrency: config.concurrency,
    mailboxes: config.mailboxes,
    retries: config.retries,
    retryDelayMs: config.retryDelayMs,
    tokens,
    ...(stop ? { stop } : {}),
  });
  return { tokens, client };
}

/**
 * Proves, before any delivery, that a token can be had and that Graph accepts it for mailbox
 * access: the `probe` mailbox's Inbox is read, or, without one, a mailbox no tenant holds is asked
 * for (Graph answers 404 ErrorInvalidUser to an accepted token, 401 or 403 to a refused one).
 */
export async function proveAccess(config: GraphSinkConfig, tokens: AccessTokens, client: GraphClient): Promise<void> {
  const unavailable = (why: string) => new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `Graph sink ${config.description}: ${why}`);
  if (client.stopped) return;
  const roles = tokenRoles(await tokens.get());
  // importMime needs a permission of its own, which a read cannot prove: the token says what was granted.
  if (config.mode === 'importMime' && roles !== undefined && !roles.includes(IMPORT_PERMISSION)) {
    throw unavailable(`mode=importMime needs the ${IMPORT_PERMISSION} application permission with admin consent; the app's token carries ${roles.length > 0 ? roles.join(', ') : 'no application permission'}`);
  }
  const mailbox = config.probe ?? PROBE_MAILBOX;
  try {
    await client.send(mailbox, { method: 'GET', path: `${GraphClient.user('v1.0', mailbox)}/mailFolders/inbox?$select=id`, retries: Math.min(OPEN_RETRIES, config.retries) });
  } catch (err) {
    // A stop signal during the check: the run is interrupted, not a setup failure; every write will say so.
    if (client.stopped) return;
    if (err instanceof PivotArchiveError) throw err;
    if (config.probe === undefined && err instanceof GraphError && err.status === 404 && err.code === 'ErrorInvalidUser') return;
    if (err instanceof GraphError && err.status === 401) throw unavailable(`Graph refused the access token (${err.message})`);
    if (err instanceof GraphError && err.status === 403) throw unavailable(`the app may not read mailboxes: grant it the Mail.ReadWrite application permission with admin consent (${err.message})`);
    if (err instanceof GraphError && err.status === 0) throw unavailable(`cannot reach ${config.graphEndpoint}: ${err.message}`);
    throw unavailable(`${config.probe !== undefined ? `probe mailbox ${config.probe}` : 'Graph'}: ${errorMessage(err)}`);
  }
}

/**
 * Creates each (mailbox, message) in the mailbox's folder through Microsoft Graph (see SPEC.md):
 * from JSON with the MAPI properties of a received message (mode=json), or from the exact MIME
 * (mode=importMime, beta). What a folder holds is listed once per (mailbox, UTC day) and kept for
 * the run, so a re-run creates nothing.
 */
export class GraphSink extends LifecycleSink implements Sink {
  readonly kind = 'graph';
  readonly description: string;
  readonly maxInFlight: number;
  readonly maxInFlightBytes = 256 * 1024 * 1024;
  readonly client: GraphClient;
  private readonly tokens: AccessTokens;
  private readonly batches: CreateBatches;
  private readonly mailboxes = new Map<string, MailboxRun>();
  /** Folders an earlier run wrote to (`resumeFolders`), by mailbox, until this run resolves the mailbox's folder: it must be the same one. */
  private readonly earlierPlaced = new Map<string, PlacedFolder[]>();
  /** `foldersToLook()` as last made, until a folder is placed or forgotten (the checkpoint then serialises it again). */
  private foldersSnapshot: FoldersToLook | undefined;
  /** Extra whole copies of items removed: another writer's made with this run's (at close), or a killed run's a re-run met. */
  copiesRemoved = 0;
  /** Graph has no permanentDelete here (a national cloud): messages are removed to Deleted Items. */
  noPermanentDelete = false;
  /**
   * Graph has no attachment upload sessions here (GCC High, DoD: known by the endpoint, or told by
   * Graph once): an item that needs one fails before its create, rather than being created and
   * removed to Deleted Items, where no permanentDelete is offered either (helper-95's r6).
   */
  private noUploadSessions: boolean;
  /**
   * Why the sink as a whole has failed: no token can be had any more (a secret expired or revoked
   * in the middle of the run). Every later write fails at once with it, rather than each asking
   * Entra ID again.
   */
  private failure: PivotArchiveError | undefined;
  /** close() was called (it may come while open() still proves access). */
  private closeCalled = false;
  /**
   * When an item was last made again after a create's answer was lost: the lost create (a batch's
   * above all, whose connection was cut) may still be carried out at Graph after that, a copy the
   * close removes only if it is there by then (helper-95 r4: a cut batch finished 15 s later, after
   * the run had closed and exited 0, left 17 copies).
   */
  private madeAgainAt: number | undefined;
  protected readonly lifecycle = new SinkLifecycle('graph', {
    open: async () => {
      await proveAccess(this.config, this.tokens, this.client);
      // A close that came while access was being proved never flushes: nothing is held for it.
      if (!this.closeCalled) graphSinkOpened(this);
    },
    flush: async () => {
      try {
        const late = this.madeAgainAt === undefined ? 0 : this.madeAgainAt + this.config.lateCopyWaitMs - Date.now();
        if (late > 0 && (await stoppableSleep(late, this.stop))) return;
        await this.removeCopiesOfOthers();
      } finally {
        this.client.close();
      }
    },
  });

  constructor(
    readonly config: GraphSinkConfig,
    private readonly stop?: AbortSignal,
  ) {
    super();
    this.description = config.description;
    // The pipeline keeps at most maxInFlight writes from its oldest unsettled one on: writes
    // waiting for a busy mailbox's 4 slots must not leave the other mailboxes idle.
    this.maxInFlight = config.mailboxes * config.concurrency * 32;
    ({ tokens: this.tokens, client: this.client } = graphAccess(config, stop));
    this.batches = new CreateBatches(this.client, config.batch, config.concurrency, config.retries);
    this.noUploadSessions = !config.uploadSessions;
  }

  override close(): Promise<void> {
    this.closeCalled = true;
    return super.close().finally(() => graphSinkClosed(this));
  }

  // A delivery waits for its mailbox's slots for up to seconds. The functions it waits in are not
  // async ones (store, storeIn's end, create, createJson): each suspended async frame, registers and
  // all, outlived V8's young generation and was promoted, and the old generation collected the
  // more often (a quarter of the bench's CPU was collection).
  protected store(delivery: Delivery): Promise<Stored> {
    return this.attempt(delivery, false);
  }

  /** One attempt of `store` (`second`: after Graph first called the mailbox unusable and a look said otherwise). */
  private attempt(delivery: Delivery, second: boolean): Promise<Stored> {
    const run = this.run(delivery.mailbox);
    if (this.failure) return Promise.reject(this.failure);
    if (run.unusable) return Promise.reject(writeError(delivery.mailbox, run.unusable));
    const folder = (run.folder ??= this.folder(delivery.mailbox, run));
    return this.storeIn(run, folder, delivery).catch((err: unknown) => this.failed(run, folder, delivery, second, err));
  }

  /** Why an attempt failed, as the write's error; a mailbox Graph first called unusable is asked again, and if usable the write is tried once more. */
  private async failed(run: MailboxRun, folder: Promise<string>, delivery: Delivery, second: boolean, err: unknown): Promise<Stored> {
    const mailbox = delivery.mailbox;
    if (folderAnswer404(err) && (await this.folderGone(mailbox, run, folder))) {
      throw markStorageLost(writeError(mailbox, `not stored: the folder ${this.config.folder.join('/')} was deleted during the run (${err.message}), and what was stored in it went with it: the next run reads the export from the start (no checkpoint) and delivers again what the folder, made anew, does not hold`));
    }
    if (mailboxUnusable(err)) {
      // Graph said the mailbox cannot be used: asked again once (one such answer may be a blip); so it stays, its items fail at once.
      if (!second && !(await this.confirmUnusable(mailbox, run, err))) return this.attempt(delivery, true);
      throw this.refused(mailbox, run, err);
    }
    if (err instanceof PivotArchiveError && err.code === ErrorCode.SINK_UNAVAILABLE) {
      this.failure ??= new PivotArchiveError(ErrorCode.SINK_WRITE, `the access token could no longer be had in the middle of the run; nothing more is delivered: ${err.message}`);
      throw this.failure;
    }
    if (err instanceof PivotArchiveError) throw (err.code === ErrorCode.SINK_WRITE && err.message.startsWith('mailbox ')) || err.code === ErrorCode.SINK_CONFIG ? err : writeError(mailbox, err.message);
    throw writeError(mailbox, `not stored: ${errorMessage(err)}`);
  }

  private async storeIn(run: MailboxRun, folder: Promise<string>, delivery: Delivery): Promise<Stored> {
    const mailbox = delivery.mailbox;
    const folderId = await folder;
    const version = this.versionOf(delivery);
    const key = versionKey(delivery.messageId, delivery.internalDate, this.storedVersion(delivery));
    const day = dayOf(delivery.internalDate);
    const listing = await this.day(mailbox, run, folderId, day);
    const held = listing.held;
    // This version, or a message of the item whose version cannot be told (taken for any). Another
    // version only (a corrected re-delivery: same identity, other bytes): this one is made beside it.
    const heldKey = heldKeyFor(listing, delivery.messageId, delivery.internalDate, version);
    const found = heldKey === undefined ? undefined : held.get(heldKey);
    if (heldKey !== undefined && found && !halfCreated(found)) {
      await this.removeExtraCopies(mailbox, listing, heldKey);
      return { outcome: 'skipped', location: graphLocation(mailbox, folderId, found.id) };
    }
    const earlier = run.storing.get(key);
    if (earlier) return { outcome: 'skipped', location: await earlier };
    // Created earlier in this run (the same item given twice): only its key was kept, so Graph says where it is.
    const createdKey = idKey(key);
    if (run.created.get(day)?.has(createdKey)) {
      const there = await this.lookUp(mailbox, folderId, delivery);
      if (there && !halfCreated(there)) return { outcome: 'skipped', location: graphLocation(mailbox, folderId, there.id) };
    }
    const paths = folderPaths(run, mailbox, folderId);
    const storing = this.create(mailbox, run, paths, delivery, found && halfCreated(found) ? found : undefined).then(
      (id) => {
        run.storing.delete(key);
        // The half-created one listed is gone: a later copy of the item finds the new one as created.
        if (heldKey !== undefined) held.delete(heldKey);
        let created = run.created.get(day);
        if (!created) run.created.set(day, (created = new Set()));
        created.add(createdKey);
        // As graphLocation(mailbox, folderId, id), its start made once.
        return paths.location + encodeURIComponent(id);
      },
      (err: unknown) => {
        run.storing.delete(key);
        throw err;
      },
    );
    run.storing.set(key, storing);
    // Returned, not awaited: this frame ends now (see `store`).
    return storing.then(delivered);
  }

  /**
   * Why the mailbox's items fail, Graph having refused one of them twice; when the mailbox could
   * be read meanwhile, it is a write that is refused (Mail.Read granted, not Mail.ReadWrite; or an
   * RBAC scope or access policy that lets the app write to some mailboxes only): this mailbox's
   * items fail, the others go on (a scope may rightly leave a mailbox out: one must not stop all).
   */
  private refused(mailbox: string, run: MailboxRun, err: GraphError): PivotArchiveError {
    if (run.unusable === undefined && err.status === 403) {
      run.unusable = `Graph refused a write (${err.message}) where it let the app read the mailbox's Inbox: grant the app the Mail.ReadWrite application permission with admin consent, and let any application access policy or RBAC scope of it take this mailbox`;
    }
    run.unusable ??= unusableReason(err);
    return new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: ${run.unusable}`);
  }

  /**
   * Whether the mailbox is unusable, asked once more after a pause (shared by the mailbox's items
   * in flight); when it is, `run.unusable` says why.
   */
  private confirmUnusable(mailbox: string, run: MailboxRun, first: GraphError): Promise<boolean> {
    run.confirming ??= (async () => {
      try {
        await this.client.pause(1, undefined);
        await this.client.send(mailbox, { method: 'GET', path: `${GraphClient.user('v1.0', mailbox)}/mailFolders/inbox?$select=id` });
        return false;
      } catch (err) {
        run.unusable ??= unusableReason(mailboxUnusable(err) ? err : first);
        return true;
      } finally {
        run.confirming = undefined;
      }
    })();
    return run.confirming;
  }

  private run(mailbox: string): MailboxRun {
    let run = this.mailboxes.get(mailbox);
    if (!run) this.mailboxes.set(mailbox, (run = { days: new Map(), storing: new Map(), created: new Map(), user: GraphClient.user('v1.0', mailbox) }));
    return run;
  }

  private folder(mailbox: string, run: MailboxRun): Promise<string> {
    const resolving = resolveFolder(this.client, mailbox, this.config.folder, true).then((folder) => {
      const earlier = this.earlierPlaced.get(mailbox);
      this.earlierPlaced.delete(mailbox);
      // Reset once for both changes here (the earlier entry gone, `run.placed` below): nothing reads it between.
      this.foldersSnapshot = undefined;
      // The folder the run this one resumes wrote to is not the one at the path now: it went, with what it held.
      if (earlier !== undefined && earlier.at(-1)!.id !== folder!.id) {
        throw markStorageLost(new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: not stored: the folder ${this.config.folder.join('/')} the earlier run this one resumes wrote to is no longer there (deleted, moved or renamed since; another folder is at its path now): what it held is not where that run recorded it; the next run reads the export from the start (no checkpoint), skips what the folder holds and delivers again what it does not`));
      }
      run.fresh = folder!.created;
      run.placed = folder!.placed;
      return folder!.id;
    });
    // A failure is not kept: the next item tries again (unless the mailbox is unusable).
    resolving.catch(() => (run.folder = undefined));
    return resolving;
  }

  /**
   * Whether the folder a request was answered 404 in is gone (deleted by someone during the run).
   * A look under way is shared, and a folder found gone stays so; an answer of "there" (or no
   * answer) is not kept: a 404 of one message must not hide the folder's deletion later (helper-99).
   * When it is gone, what the run knew of it is dropped: the next item finds (or makes) the folder
   * again and lists it anew.
   */
  private folderGone(mailbox: string, run: MailboxRun, folder: Promise<string>): Promise<boolean> {
    return folder.then(
      (folderId) => {
        const checks = (run.goneChecks ??= new Map());
        let gone = checks.get(folderId);
        if (gone === undefined) {
          gone = this.client.send(mailbox, { method: 'GET', path: `${run.user}/mailFolders/${encodeURIComponent(folderId)}?$select=id` }).then(
            () => false,
            (err: unknown) => folderAnswer404(err),
          );
          checks.set(folderId, gone);
          void gone.then((isGone: boolean) => {
            if (!isGone) checks.delete(folderId);
            else if (run.folder === folder) {
              run.folder = undefined;
              run.placed = undefined;
              this.foldersSnapshot = undefined;
              run.days.clear();
              run.created.clear();
            }
          });
        }
        return gone;
      },
      () => false,
    );
  }

  /** The folders the end-of-run look would look at now: each mailbox's folder path as resolved (`PlacedFolder`s, top first). */
  foldersToLook(): FoldersToLook {
    if (this.foldersSnapshot) return this.foldersSnapshot;
    const folders: FoldersToLook = Object.fromEntries(this.earlierPlaced);
    for (const [mailbox, run] of this.mailboxes) if (run.placed !== undefined && run.placed.length > 0) folders[mailbox] = run.placed;
    return (this.foldersSnapshot = folders);
  }

  /** An earlier run's folders (see Sink.resumeFolders): the mailbox's folder resolved again must be the same one, and the look covers them. */
  resumeFolders(folders: FoldersToLook): boolean {
    const path = this.config.folder;
    const text = (v: unknown): v is string => typeof v === 'string' && v !== '';
    const isPath = (placed: unknown): placed is PlacedFolder[] =>
      Array.isArray(placed) &&
      placed.length > 0 &&
      placed.length <= path.length &&
      placed.every((f: unknown, i) => typeof f === 'object' && f !== null && text((f as PlacedFolder).id) && text((f as PlacedFolder).parentFolderId) && typeof (f as PlacedFolder).name === 'string' && (f as PlacedFolder).name.toLowerCase() === path[path.length - placed.length + i]!.toLowerCase());
    const entries = Object.entries(folders);
    if (!entries.every(([mailbox, placed]) => MAILBOX_ADDRESS.test(mailbox) && isPath(placed))) return false;
    for (const [mailbox, placed] of entries) {
      if (!this.mailboxes.get(mailbox)?.placed) this.earlierPlaced.set(mailbox, (placed as PlacedFolder[]).map(({ id, name, parentFolderId }) => ({ id, name, parentFolderId })));
    }
    this.foldersSnapshot = undefined;
    return true;
  }

  /**
   * The folders this run wrote to or found items in that are no longer where it put them (SPEC.md,
   * "A folder deleted after its mailbox's last write"): no later write was there to find it, and a
   * folder deleted into Deleted Items is found by no write (its id keeps working). Each
   * folder of the path below a well-known one is read, the one written to first, then up its
   * parents, and must still be in the parent it was found or made in, under its name; a 404 is a
   * folder deleted for good. One request a mailbox for `Inbox/Pivot`. A folder that could not be
   * read (Graph unreachable, 5xx or 429 past the retries, no token) is not confirmed in place, and
   * that fails the run too: exit 0 says every item is there. Nothing is asked after a stop signal:
   * a look it cut short is LOOK_STOPPED (the run is interrupted), unless what was read gives a reason.
   */
  async lostSinceWritten(): Promise<LostSinceWritten | undefined | typeof LOOK_STOPPED> {
    const displaced: string[] = [];
    const displacedMailboxes: string[] = [];
    const unconfirmed: string[] = [];
    let cut = false;
    const written = [...this.mailboxes].filter(([, run]) => run.placed !== undefined && run.placed.length > 0).map(([mailbox, run]) => ({ mailbox, user: run.user, placed: run.placed!, earlier: false }));
    for (const [mailbox, placed] of this.earlierPlaced) written.push({ mailbox, user: GraphClient.user('v1.0', mailbox), placed, earlier: true });
    // A mailbox's folders are read one at a time: the client's limit of requests for all mailboxes is the workers'.
    await eachLimited(written, this.config.mailboxes * this.config.concurrency, async ({ mailbox, user, placed, earlier }) => {
      if (this.client.stopped) return void (cut = true);
      try {
        const why = await this.displaced(mailbox, user, placed);
        if (why === undefined) return;
        displaced.push(`${mailbox}: ${why}${earlier ? ` (${RESUMED_FOLDER_NOTE})` : ''}`);
        displacedMailboxes.push(mailbox);
      } catch (err) {
        if (this.client.stopped) cut = true;
        else unconfirmed.push(`${mailbox}: ${errorMessage(err)}`);
      }
    });
    if (cut && displaced.length + unconfirmed.length === 0) return LOOK_STOPPED;
    const reasons: string[] = [];
    if (displaced.length > 0) reasons.push(`${displaced.length} folder(s) this run wrote to or found items in are no longer where it put them, deleted, moved or renamed during the run (${firstFew(displaced, '; ')}); what they held is not where the run recorded it`);
    if (unconfirmed.length > 0) reasons.push(`whether ${unconfirmed.length} folder(s) this run wrote to or found items in are still in place could not be confirmed (${firstFew(unconfirmed, '; ')}), so the run cannot say every item is there`);
    if (reasons.length === 0) return undefined;
    return { reason: `graph: ${reasons.join('; ')}; the next run reads the export from the start (no checkpoint), skips what the folder ${this.config.folder.join('/')} holds and delivers again what it does not`, mailboxes: displacedMailboxes };
  }

  /**
   * Why a mailbox's folder path (`placed`, top first) is no longer where the run put it, read from
   * the folder written to up to the top; undefined when each of its folders is in place.
   */
  private async displaced(mailbox: string, user: string, placed: readonly PlacedFolder[]): Promise<string | undefined> {
    // The well-known folder the path starts with, if any, is not in `placed`: it cannot be deleted.
    const above = this.config.folder.length - placed.length;
    for (let i = placed.length - 1; i >= 0; i--) {
      const folder = placed[i]!;
      const path = this.config.folder.slice(0, above + i + 1).join('/');
      let now: FolderAnswer;
      try {
        now = (await this.client.send(mailbox, { method: 'GET', path: `${user}/mailFolders/${encodeURIComponent(folder.id)}?$select=id,parentFolderId,displayName` })).json as FolderAnswer;
      } catch (err) {
        if (folderAnswer404(err)) return `${path} was deleted for good (${err.message})`;
        throw err;
      }
      // A deleted folder keeps its id: Exchange moves it, with what it holds, into Deleted Items.
      if (now.parentFolderId !== folder.parentFolderId) return `${path} was moved out of ${above + i > 0 ? this.config.folder.slice(0, above + i).join('/') : 'the top of the mailbox'} (a deleted folder is moved into Deleted Items)`;
      if (now.displayName?.toLowerCase() !== folder.name.toLowerCase()) return `${path} was renamed ${JSON.stringify(now.displayName)}`;
    }
    return undefined;
  }

  /** What the folder holds with sentAt in one UTC day, listed once per run. */
  private day(mailbox: string, run: MailboxRun, folderId: string, day: number): Promise<DayListing> {
    let listing = run.days.get(day);
    if (!listing) {
      // A folder this run created held nothing: what it holds now is what this run wrote, known already.
      listing = run.fresh ? Promise.resolve(dayListing([])) : listFolder(this.client, mailbox, folderId, dayWindow(day)).then(dayListing);
      run.days.set(day, listing);
      listing.catch(() => run.days.delete(day));
    }
    return listing;
  }

  /**
   * Creates the message (after removing a half-created one of a run that stopped midway), and
   * resolves it once all of it is in: the create, every later attachment, then the stamp.
   */
  private create(mailbox: string, run: MailboxRun, paths: FolderPaths, delivery: Delivery, leftHalf: Listed | undefined): Promise<string> {
    if (delivery.message.length > this.config.maxMessageBytes) {
      return Promise.reject(new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: the message is ${delivery.message.length} bytes, over the mailboxes' limit of ${this.config.maxMessageBytes / 1024 / 1024} MB (maxMessageSize=; Exchange Online's default is 35 MB, which an admin can raise to 150 MB with Set-Mailbox -MaxReceiveSize)`));
    }
    if (leftHalf) return this.remove(mailbox, leftHalf.id).then(() => this.createAttempt(mailbox, run, paths, delivery, 1));
    return this.createAttempt(mailbox, run, paths, delivery, 1);
  }

  /** Attempt `attempt` of a create; a lost answer is looked into (`afterLoss`) before anything is sent again. */
  private createAttempt(mailbox: string, run: MailboxRun, paths: FolderPaths, delivery: Delivery, attempt: number): Promise<string> {
    const made = this.config.mode === 'importMime' ? this.importMime(mailbox, paths.folderId, delivery) : this.createJson(mailbox, run.user, paths.messages, delivery);
    return made.catch((err: unknown) => this.afterLoss(mailbox, run, paths, delivery, attempt, err));
  }

  /**
   * The create, or an attachment, may have been carried out (UncertainError): wait as Graph asks (a
   * 503 storm passes), then look before sending anything again (nothing twice), also after the last
   * attempt. Any other error is the create's.
   */
  private async afterLoss(mailbox: string, run: MailboxRun, paths: FolderPaths, delivery: Delivery, attempt: number, err: unknown): Promise<string> {
    if (!(err instanceof UncertainError)) throw err;
    await this.client.pause(attempt, err.retryAfterMs);
    const there = await this.lookUpAfterLoss(mailbox, paths.folderId, delivery, err);
    if (there && !halfCreated(there)) return there.id;
    if (there) await this.remove(mailbox, there.id);
    if (attempt > this.config.retries) throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: not stored: ${attempt} attempts went unanswered (the last: ${err.message}), and the folder does not hold it`);
    this.madeAgainAt = Date.now();
    return this.createAttempt(mailbox, run, paths, delivery, attempt + 1);
  }

  /**
   * The look-up after a lost answer, waiting out a throttled or failing Graph longer than other
   * requests. When it cannot be had, the item fails saying it may be stored: a re-run lists the
   * day and skips it if it is.
   */
  private async lookUpAfterLoss(mailbox: string, folderId: string, delivery: Delivery, lost: UncertainError): Promise<Listed | undefined> {
    try {
      return await this.lookUp(mailbox, folderId, delivery, Math.max(this.config.retries, LOST_ANSWER_LOOK_UP_RETRIES));
    } catch (err) {
      // A 404 of the folder itself: whether it is gone (and the item with it) is asked by `failed`.
      if (err instanceof PivotArchiveError || mailboxUnusable(err) || folderAnswer404(err)) throw err;
      throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: perhaps stored: an answer was lost (${lost.message}) and the folder could not be looked at (${errorMessage(err)}); a re-run skips the item if the folder holds it`);
    }
  }

  private async importMime(mailbox: string, folderId: string, delivery: Delivery): Promise<string> {
    const body = delivery.message.toString('base64');
    if (body.length > REQUEST_BODY_MAX) throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: a ${delivery.message.length}-byte message is over what importMime takes in one request (4 MB of base64, about 3 MB of MIME): use mode=json`);
    const made = await this.client.send(mailbox, { method: 'POST', path: `${GraphClient.user('beta', mailbox)}/mailFolders/${encodeURIComponent(folderId)}/importMime`, contentType: 'text/plain', body, once: true }).catch((err: unknown) => {
      // Beta, global service only: every item would fail alike, so the run reads no further (E_SINK_CONFIG).
      if (missingAction(err, 'importMime')) this.failure ??= new PivotArchiveError(ErrorCode.SINK_CONFIG, `Graph sink ${this.description}: Graph here does not offer importMime (a beta API of the global service only: ${errorMessage(err)}): use mode=json`);
      throw this.failure ?? err;
    });
    return listedOf(made.json as Record<string, unknown>).id;
  }

  /** An item's copies for its mailboxes share one message buffer: its Graph JSON is made once for all of them. */
  private readonly built = new WeakMap<Buffer, Built>();
  /** The version a delivery is compared by, in either mode (an imported copy of it still shows none: `storedVersion`); made once for all its mailboxes. */
  private versionOf(delivery: Delivery): string {
    return messageVersion(delivery.message);
  }

  /** The version a created copy shows in a listing: importMime's carry no stamp (''). */
  private storedVersion(delivery: Delivery): string {
    return this.config.mode === 'importMime' ? '' : this.versionOf(delivery);
  }

  private graphMessageOf(delivery: Delivery): Built {
    let made = this.built.get(delivery.message);
    if (made === undefined || made.sentAt !== delivery.internalDate) {
      const message = graphMessage(delivery.message, delivery.internalDate, this.versionOf(delivery));
      // The create's object is not kept: its JSON is all that is sent.
      made = { sentAt: delivery.internalDate, later: message.later, stamp: message.stamp, body: unpooled(JSON.stringify(message.create)) };
      this.built.set(delivery.message, made);
    }
    return made;
  }

  private createJson(mailbox: string, user: string, messages: string, delivery: Delivery): Promise<string> {
    let message: Built;
    try {
      message = this.graphMessageOf(delivery);
      if (message.later.length > 0) this.checkLater(mailbox, message.later);
    } catch (err) {
      return Promise.reject(err);
    }
    const created = this.batches.create(mailbox, messages, message.body).then(createdMessageId);
    return message.later.length === 0 ? created : created.then((id) => this.completeLater(mailbox, user, id, message));
  }

  /** The attachments too large for the create added to the message `id`, then its final stamp; half a message is removed. */
  private async completeLater(mailbox: string, user: string, id: string, message: Built): Promise<string> {
    try {
      for (const attachment of message.later) await this.attach(mailbox, id, attachment);
      // Last: the final stamp, which says all of it is in.
      await this.client.send(mailbox, { method: 'PATCH', path: `${user}/messages/${encodeURIComponent(id)}`, contentType: 'application/json', body: JSON.stringify({ singleValueExtendedProperties: [{ id: STAMP_PROPERTY, value: message.stamp }] }) });
    } catch (err) {
      // Half a message is no delivery: removed now, or (if that fails too) by the next run, which finds it pending.
      await this.remove(mailbox, id).catch(() => undefined);
      throw err;
    }
    return id;
  }

  /** Attachments added after the create that Graph cannot take: the item fails before anything is sent. */
  private checkLater(mailbox: string, later: readonly FileAttachment[]): void {
    const tooLarge = later.find((a) => a.bytes.length > ATTACHMENT_MAX);
    if (tooLarge) throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: attachment ${JSON.stringify(tooLarge.name)} is ${tooLarge.bytes.length} bytes, over Graph's 150 MB`);
    // Just under 3 MB, base64 and the JSON around it take the request over 4 MB, and an upload session is refused under 3 MB: no way in.
    const uploaded = this.noUploadSessions ? later.find((a) => attachmentRequestBytes(a) > REQUEST_BODY_MAX) : undefined;
    if (uploaded) throw noUploadSessionError(mailbox, uploaded);
    const between = later.find((a) => a.bytes.length < UPLOAD_SESSION_MIN && attachmentRequestBytes(a) > REQUEST_BODY_MAX);
    if (between) {
      throw new PivotArchiveError(
        ErrorCode.SINK_WRITE,
        `mailbox ${mailbox}: attachment ${JSON.stringify(between.name)} is ${between.bytes.length} bytes: Graph takes it neither in one request (${attachmentRequestBytes(between)} bytes as JSON, over its 4 MB) nor through an upload session (from 3 MB, ${UPLOAD_SESSION_MIN} bytes, on); importMime cannot carry the message either (over 4 MB of base64): deliver it to another sink`,
      );
    }
  }

  /** An attachment added to a created message: one POST while the request stays within 4 MB, else an upload session in chunks of at most 4 MB. */
  private async attach(mailbox: string, messageId: string, a: FileAttachment): Promise<void> {
    const path = `${GraphClient.user('v1.0', mailbox)}/messages/${encodeURIComponent(messageId)}/attachments`;
    // Each request here adds to the message, so none is sent twice: a lost answer (UncertainError)
    // removes the message, and the item is created again from the start once its absence is seen.
    if (attachmentRequestBytes(a) <= REQUEST_BODY_MAX) {
      await this.client.send(mailbox, { method: 'POST', path, contentType: 'application/json', body: JSON.stringify(fileAttachmentJson(a)), once: true });
      return;
    }
    const session = await this.client
      .send(mailbox, {
        method: 'POST',
        path: `${path}/createUploadSession`,
        contentType: 'application/json',
        body: JSON.stringify({ AttachmentItem: { attachmentType: 'file', name: a.name, size: a.bytes.length, contentType: a.contentType } }),
        once: true,
      })
      .catch((err: unknown) => {
        if (!missingAction(err, 'createUploadSession')) throw err;
        this.noUploadSessions = true;
        throw noUploadSessionError(mailbox, a);
      });
    const uploadUrl = (session.json as { uploadUrl?: string }).uploadUrl;
    if (!uploadUrl) throw new GraphError(session.status, 'NoUploadUrl', 'createUploadSession answered without an uploadUrl');
    for (let start = 0; start < a.bytes.length; start += CHUNK_BYTES) {
      const chunk = a.bytes.subarray(start, Math.min(a.bytes.length, start + CHUNK_BYTES));
      // The upload URL carries its own authorization: a bearer token with it is refused.
      await this.client.send(mailbox, {
        method: 'PUT',
        path: uploadUrl,
        anonymous: true,
        contentType: 'application/octet-stream',
        headers: { 'content-range': `bytes ${start}-${start + chunk.length - 1}/${a.bytes.length}` },
        body: chunk,
        once: true,
      });
    }
  }

  /**
   * The message of this item in the folder, if any. Every message of its Message-ID is read, page
   * by page: one Message-ID may be held by many items (of other days), more than a page.
   */
  private async lookUp(mailbox: string, folderId: string, delivery: Delivery, retries?: number): Promise<Listed | undefined> {
    const same = await listMessages(this.client, mailbox, folderId, `internetMessageId eq ${odataString(delivery.messageId)}`, { maxPages: LOOK_UP_PAGES, ...(retries !== undefined ? { retries } : {}) });
    const item = identity(delivery.messageId, delivery.internalDate);
    return copyFor(same.filter((m) => listedIdentity(m) === item), this.versionOf(delivery));
  }

  /**
   * Another writer that delivered the same items into the same folder at the same time (a second
   * run with a state dir of its own) may have created copies of items this run created too. Each
   * (mailbox, UTC day) this run created in is listed again; of an item held whole more than once,
   * the copy with the least id is kept and the others are removed, whoever made them. Writers that
   * each do this leave exactly one: none removes the least copy it sees, and the last to finish
   * sees every copy (a copy still pending belongs to a writer that has not finished yet). An item
   * whose key matches one of this run's by chance is treated the same: its least copy stays. Only
   * copies of one version are compared (`dayListing`, `removeBeyondLeast`), so no other version of the item (a
   * corrected re-delivery) goes. Best effort: when Graph cannot be asked now, the copies stay, and
   * `verify` names them unexpected.
   */
  private async removeCopiesOfOthers(): Promise<void> {
    const touched = [...this.mailboxes].filter(([, run]) => run.created.size > 0 && run.folder !== undefined);
    await eachLimited(touched, this.config.mailboxes, async ([mailbox, run]) => {
      if (this.client.stopped) return;
      try {
        const folderId = await run.folder!;
        for (const [day, created] of run.created) {
          // Copies are rare (a writer at the same time, a run killed before its close): the day is
          // read for the keys of this run's items held more than once, and read again, for those
          // alone, only when there are any. Every message of the day kept at once made the close the
          // peak of a large day, growing with it (the 60,000-event bench: 20-40 MB over the rest of the run).
          const window = dayWindow(day);
          const once = new Set<number>();
          const again = new Set<number>();
          await eachInFolder(this.client, mailbox, folderId, window, (m) => {
            const key = idKey(listedKey(m));
            if (!created.has(key)) return;
            if (once.has(key)) again.add(key);
            else once.add(key);
          });
          if (again.size === 0) continue;
          const listed: Listed[] = [];
          await eachInFolder(this.client, mailbox, folderId, window, (m) => {
            if (again.has(idKey(listedKey(m)))) listed.push(m);
          });
          // The versions this run created, grouped as a day's listing groups them (by exact version: an
          // unstamped copy is never removed in favour of a stamped one, nor the other way round).
          const ours = dayListing(listed);
          for (const [key, extra] of ours.extra) await this.removeBeyondLeast(mailbox, [ours.held.get(key)!, ...extra]);
        }
      } catch {
        // Best effort (see above).
      }
    });
  }

  /**
   * An item the folder holds whole more than once (a run killed after a lost answer, before its
   * close removed the copies): the copies beyond the least id are removed when a re-run meets the
   * item, by the rule `removeCopiesOfOthers` keeps. Best effort, as there: a copy Graph will not
   * remove now stays, and `verify` names it.
   */
  private async removeExtraCopies(mailbox: string, listing: DayListing, key: string): Promise<void> {
    const extra = listing.extra.get(key);
    if (!extra) return;
    listing.extra.delete(key);
    try {
      await this.removeBeyondLeast(mailbox, [listing.held.get(key)!, ...extra]);
    } catch {
      // Best effort (see above).
    }
  }

  /**
   * Removes the copies of one version (`copies`, the least id first) beyond the least. Unstamped
   * ones (imported, or stamped before stamps carried the version) may be different versions of the
   * item: they are told apart by the sha256 of what Graph serves less X-Pivot-Export-Id, and only
   * copies of one content beyond its least id go (two importMime runs of a first and a corrected
   * version at once keep both).
   */
  private async removeBeyondLeast(mailbox: string, copies: readonly Listed[]): Promise<void> {
    const extra = versionOf(copies[0]!) === '' ? await this.sameContentBeyondLeast(mailbox, copies) : copies.slice(1);
    for (const m of extra) {
      try {
        if (await this.remove(mailbox, m.id)) this.copiesRemoved++;
      } catch {
        // Best effort (see removeCopiesOfOthers).
      }
    }
  }

  private async sameContentBeyondLeast(mailbox: string, copies: readonly Listed[]): Promise<Listed[]> {
    const seen = new Set<string>();
    const extra: Listed[] = [];
    for (const m of copies) {
      let served: GraphResponse;
      try {
        served = await this.client.send(mailbox, { method: 'GET', path: `${GraphClient.user('v1.0', mailbox)}/messages/${encodeURIComponent(m.id)}/$value`, raw: true });
      } catch {
        // Gone (another writer closing removed it) or not readable now: not compared, so never
        // removed, and the item's other copies are still compared (one failure ended the mailbox's check).
        continue;
      }
      const content = messageVersion(served.bytes!);
      if (seen.has(content)) extra.push(m);
      else seen.add(content);
    }
    return extra;
  }

  /**
   * Removes a message for good where Graph can (permanentDelete: a DELETE moves it to Deleted
   * Items, where a half message would stay); false when it was gone already. permanentDelete is
   * in the global service only: where Graph does not have it, the message is DELETEd (moved to
   * Deleted Items), for the rest of the run.
   */
  private async remove(mailbox: string, messageId: string): Promise<boolean> {
    const path = `${GraphClient.user('v1.0', mailbox)}/messages/${encodeURIComponent(messageId)}`;
    if (!this.noPermanentDelete) {
      try {
        await this.client.send(mailbox, { method: 'POST', path: `${path}/permanentDelete` });
        return true;
      } catch (err) {
        if (!(err instanceof GraphError)) throw err;
        if (err.status === 404 && err.code === 'ErrorItemNotFound') return false;
        const missing = missingAction(err, 'permanentDelete') || err.status === 405;
        // Any other 404 may be of the action or of the message: the DELETE tells.
        if (!missing && err.status !== 404) throw err;
        if (missing) this.noPermanentDelete = true;
      }
    }
    try {
      await this.client.send(mailbox, { method: 'DELETE', path });
      return true;
    } catch (err) {
      if (!(err instanceof GraphError && err.status === 404)) throw err;
      return false;
    }
  }
}

/** Graph does not offer `action` here (a national cloud): 400 "Resource not found for the segment". */
function missingAction(err: unknown, action: string): boolean {
  return err instanceof GraphError && err.status === 400 && err.message.toLowerCase().includes(`segment '${action.toLowerCase()}'`);
}

function noUploadSessionError(mailbox: string, a: FileAttachment): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: attachment ${JSON.stringify(a.name)} is ${a.bytes.length} bytes, more than one request carries, and Graph here offers no upload sessions to add it (as GCC High and DoD do not): not created; deliver such items to another sink (Maildir, IMAP)`);
}

/**
 * The UTF-8 bytes of `text` in memory of their own. Buffer.from puts a text under 4 KB in a slice
 * of a shared 8 KB block, which stays whole while any slice of it is kept, and a body is kept until
 * the last mailbox of its message has it (seconds, at a busy mailbox): mid-run in the 60,000-event
 * bench, such blocks kept by bodies and by messages held 15 MB.
 */
function unpooled(text: string): Buffer {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  bytes.write(text);
  return bytes;
}

function delivered(location: string): Stored {
  return { outcome: 'delivered', location };
}

/** The id a create's answer names; a 2xx without it is looked up, as for a lost answer. */
function createdMessageId(id: unknown): string {
  if (typeof id !== 'string' || id === '') throw new UncertainError("the create's answer names no message id");
  return id;
}

/** A write's failure, naming its mailbox. */
function writeError(mailbox: string, why: string): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${mailbox}: ${why}`);
}

function unusableReason(err: GraphError): string {
  return `Graph cannot deliver to this mailbox (${err.message}): is it a licensed Exchange Online mailbox, named by its user principal name?`;
}

export function createGraphSink(spec: string, options: Partial<SinkOptions> & { env?: NodeJS.ProcessEnv } = {}): GraphSink {
  return new GraphSink(parseGraphSpec(spec, options), options.stop);
}

export const graphSinkFactory: SinkFactory = {
  scheme: 'graph',
  create: (spec, options) => createGraphSink(spec, options),
  check: (spec, options) => void parseGraphSpec(spec, { ...options, secretChecked: false }),
  reader: (spec, options) => createGraphReader(spec, options),
};
