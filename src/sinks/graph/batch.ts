// A mailbox's creates sent to Graph in JSON batches (`POST /$batch`, at most 20 requests): the
// creates waiting for one mailbox go together, independent of each other, so Outlook runs up to 4
// of a batch at once and the batch holds as many of the mailbox's request slots; the client pays
// one HTTP exchange for up to 20 creates. A batch is cut when 20 wait, when the oldest has waited
// LINGER_MS (then a multiple of four of them), or for a create alone at an idle mailbox: cut as
// soon as slots were free, batches held about two creates each (a mailbox gets a few creates a
// second), and the HTTP exchanges took the CPU. A mailbox whose batch met a 429 (a Graph that runs fewer than 4 at once) sends its
// later batches sequential instead (each create `dependsOn` the one before, so Outlook runs one at
// a time and the batch holds one slot). Each create's answer is read alone (see `send` and SPEC.md, "JSON batching"): what was not
// carried out goes again, what may have been is an UncertainError (the caller looks before it
// sends again).
import { type GraphClient, UncertainError, graphErrorOf, retryAfterMs } from './client.js';
import { errorMessage } from '../../errors.js';
import { batchResponses, createdId, idOf } from './answer.js';

/** How long a create may wait for others of its mailbox to fill a batch. */
const LINGER_MS = 500;
/** A create larger than this goes alone. */
const BATCHED_CREATE_MAX = 256 * 1024;
/** How long a lost batch's creates wait, per create in it, before they are looked for. */
const LOST_BATCH_WAIT_MS = 250;
/** The creates' bytes in one batch: its body stays under Graph's 4 MB with room for the envelope. */
const BATCH_BYTES_MAX = 3 * 1024 * 1024;

interface Waiting {
  /** The create's path, as `client.send` takes it (`/v1.0/users/...`). */
  path: string;
  body: Buffer;
  /** When it came (Date.now()): it waits for a fuller batch until LINGER_MS after. */
  since: number;
  /** Times Graph answered it 429. */
  throttled: number;
  /** Graph answered it 401 once (its token expired while the batch ran): sent again with a new token. */
  renewed?: boolean;
  /** With the created message's id as Graph answered it (anything: the caller checks it). */
  resolve: (id: unknown) => void;
  reject: (err: unknown) => void;
}

interface MailboxCreates {
  waiting: Waiting[];
  /** Request slots its batches in flight hold (a batch of n: min(n, concurrency)). */
  held: number;
  /** A pump is due (after the current I/O turn, so the creates arriving in it go together). */
  due: boolean;
  /** Pumps when the oldest create waiting has lingered long enough. */
  timer?: NodeJS.Timeout;
}

export class CreateBatches {
  private readonly mailboxes = new Map<string, MailboxCreates>();
  /** Mailboxes whose batches go sequential for the rest of the run (a create of a parallel one met a 429). */
  private readonly sequential = new Set<string>();

  constructor(
    private readonly client: GraphClient,
    /** Creates per batch, 1 to 20 (1: each create alone). */
    private readonly size: number,
    /** Request slots per mailbox (Outlook runs at most 4 requests of a mailbox at once). */
    private readonly concurrency: number,
    /** Times a create goes again after a 429 before it fails. */
    private readonly retries: number,
  ) {}

  /**
   * POSTs `body` (a message's JSON) to `path`; resolves the created message's `id` as Graph
   * answered it (not checked here), the rest of the answer let go at once.
   */
  create(mailbox: string, path: string, body: Buffer): Promise<unknown> {
    if (this.size <= 1 || body.length > BATCHED_CREATE_MAX) return this.alone(mailbox, path, body);
    return new Promise((resolve, reject) => {
      const creates = this.of(mailbox);
      creates.waiting.push({ path, body, since: Date.now(), throttled: 0, resolve, reject });
      this.schedule(mailbox, creates);
    });
  }

  private async alone(mailbox: string, path: string, body: Buffer): Promise<unknown> {
    const made = await this.client.send(mailbox, { method: 'POST', path, contentType: 'application/json', body, once: true, raw: true });
    return createdId(made.bytes!);
  }

  private of(mailbox: string): MailboxCreates {
    let creates = this.mailboxes.get(mailbox);
    if (!creates) this.mailboxes.set(mailbox, (creates = { waiting: [], held: 0, due: false }));
    return creates;
  }

  private schedule(mailbox: string, creates: MailboxCreates): void {
    if (creates.due) return;
    creates.due = true;
    setImmediate(() => {
      creates.due = false;
      this.pump(mailbox, creates);
    });
  }

  private pump(mailbox: string, creates: MailboxCreates): void {
    clearTimeout(creates.timer);
    creates.timer = undefined;
    while (creates.waiting.length > 0) {
      // Up to `size` creates, and never more bytes than one request may carry.
      let count = 0;
      let bytes = 0;
      while (count < Math.min(this.size, creates.waiting.length) && (count === 0 || bytes + creates.waiting[count]!.body.length <= BATCH_BYTES_MAX)) bytes += creates.waiting[count++]!.body.length;
      const full = count < creates.waiting.length || count === this.size;
      // A create alone at an idle mailbox goes at once (one writer writing one item at a time).
      const idle = creates.held === 0 && creates.waiting.length === 1;
      const lingered = Date.now() - creates.waiting[0]!.since;
      if (!full && !idle && lingered < LINGER_MS) {
        creates.timer = setTimeout(() => this.pump(mailbox, creates), LINGER_MS - lingered);
        return;
      }
      const sequential = this.sequential.has(mailbox);
      // Outlook runs a parallel batch four at a time and its slots are held to the end: a batch of
      // 10 leaves two of them idle for its last turn. One that is not full takes a multiple of four
      // (the rest wait for the next): with 16 mailboxes at once, where slots are the limit, 45.6 s
      // became 40.3 s, as fast as batches sent one create at a time (SPEC.md).
      if (!full && !sequential && count > this.concurrency) count -= count % this.concurrency;
      const slots = sequential ? 1 : Math.min(count, this.concurrency);
      // Slots still held: the batch in flight pumps again when it is answered.
      if (creates.held + slots > this.concurrency) return;
      const batch = creates.waiting.splice(0, count);
      creates.held += slots;
      this.send(mailbox, creates, batch, sequential)
        // Whatever went wrong reading the answer, no create is left unsettled: each not settled yet is looked for.
        .catch((err: unknown) => {
          for (const w of batch) w.reject(new UncertainError(`the batch's answer could not be read: ${errorMessage(err)}`));
        })
        .finally(() => {
          creates.held -= slots;
          if (creates.waiting.length > 0) this.schedule(mailbox, creates);
          else if (creates.held === 0 && !creates.due) this.mailboxes.delete(mailbox);
        });
    }
  }

  private async send(mailbox: string, creates: MailboxCreates, batch: Waiting[], sequential: boolean): Promise<void> {
    if (batch.length === 1) {
      const [only] = batch as [Waiting];
      return this.alone(mailbox, only.path, only.body).then(only.resolve, only.reject);
    }
    let answer: Buffer;
    try {
      answer = (await this.client.send(mailbox, { method: 'POST', path: '/v1.0/$batch', contentType: 'application/json', body: batchBody(batch, sequential), once: true, slots: sequential ? 1 : batch.length, raw: true })).bytes!;
    } catch (err) {
      // The batch may still be running at Graph when its answer is lost: the look-up waits a quarter
      // second a create of it at least (a create takes Graph 0.1-0.5 s; it runs 4 at once, but may run
      // fewer), so that it does not miss those still to come and make them twice (copies that slip
      // through are removed at close).
      const late = err instanceof UncertainError ? new UncertainError(err.message, Math.max(err.retryAfterMs ?? 0, batch.length * LOST_BATCH_WAIT_MS)) : err;
      // Its creates may still run at Outlook in the slots this batch gives back: the mailbox sends nothing meanwhile.
      if (late instanceof UncertainError) this.client.holdOff(mailbox, late.retryAfterMs!);
      for (const w of batch) w.reject(late);
      return;
    }
    const byId = new Map<string, BatchAnswer>();
    for (const r of batchResponses(answer) ?? []) {
      if (typeof r === 'object' && r !== null && typeof (r as BatchAnswer).status === 'number') byId.set(String((r as BatchAnswer).id), r as BatchAnswer);
    }
    const again: Waiting[] = [];
    // The longest wait Graph asked for with a 429 or a 5xx: the whole mailbox waits it out, as the
    // client does for a request sent alone (the creates sent again would meet the same answer).
    let holdOff = 0;
    let renew = false;
    for (let i = 0; i < batch.length; i++) {
      const w = batch[i]!;
      const r = byId.get(String(i + 1));
      const status = r === undefined ? 0 : (r.status as number);
      if (status >= 200 && status < 300) {
        w.resolve(idOf(r!.body));
        continue;
      }
      // (Read only for an answer that is not a success: a success needs no wait.)
      const retryAfter = retryAfterMs(lowerCased(r?.headers));
      // Sequential: not carried out because a create before it was not: goes again. The first of a
      // batch depends on nothing, so every batch settles its first create at least.
      if (status === 424 && sequential && i > 0) again.push(w);
      else if (status === 401 && !w.renewed) {
        w.renewed = true;
        renew = true;
        again.push(w);
      } else if (status === 429 && w.throttled < this.retries) {
        w.throttled++;
        this.client.stats.throttled++;
        this.sequential.add(mailbox);
        holdOff = Math.max(holdOff, this.client.retryWait(w.throttled, retryAfter));
        again.push(w);
      } else if (status < 200 || status >= 500 || status === 424) {
        // No answer, or one that may follow the work: looked for before anything is sent again.
        if (status >= 500 && retryAfter !== undefined) holdOff = Math.max(holdOff, retryAfter);
        w.reject(new UncertainError(r === undefined ? `the batch's answer holds none for its create ${i + 1}` : graphErrorOf(status, r.body).message, retryAfter));
      } else w.reject(graphErrorOf(status, r!.body));
    }
    if (holdOff > 0) this.client.holdOff(mailbox, holdOff);
    if (renew) this.client.renewToken();
    if (again.length > 0) creates.waiting.unshift(...again);
  }
}

interface BatchAnswer {
  id: unknown;
  status: unknown;
  headers?: Record<string, string>;
  body?: unknown;
}

/** `"url":<the create's url, relative to the version>` of a path, as the batch names it; the last one kept (a mailbox's creates share one). */
let lastPath: string | undefined;
let lastUrl = '';
function urlField(path: string): string {
  if (path !== lastPath) {
    lastPath = path;
    lastUrl = `"url":${JSON.stringify(path.replace(/^\/v1\.0/, ''))}`;
  }
  return lastUrl;
}

/** The batch's JSON, each create's body (already JSON) put in as it is (sequential: each depends on the one before). Written into one buffer. */
function batchBody(batch: Waiting[], sequential: boolean): Buffer {
  const heads: string[] = [];
  let size = BATCH_OPEN.length + BATCH_CLOSE.length;
  for (let i = 0; i < batch.length; i++) {
    const head = `${i > 0 ? ',' : ''}{"id":"${i + 1}",${sequential && i > 0 ? `"dependsOn":["${i}"],` : ''}"method":"POST",${urlField(batch[i]!.path)},"headers":{"Content-Type":"application/json"},"body":`;
    heads.push(head);
    size += Buffer.byteLength(head) + batch[i]!.body.length + 1;
  }
  const out = Buffer.allocUnsafe(size);
  let at = out.write(BATCH_OPEN, 0, 'latin1');
  for (let i = 0; i < batch.length; i++) {
    at += out.write(heads[i]!, at);
    at += batch[i]!.body.copy(out, at);
    out[at++] = 0x7d; // }
  }
  at += out.write(BATCH_CLOSE, at, 'latin1');
  return at === size ? out : out.subarray(0, at);
}

const BATCH_OPEN = '{"requests":[';
const BATCH_CLOSE = ']}';

function lowerCased(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) out[k.toLowerCase()] = v;
  return out;
}
