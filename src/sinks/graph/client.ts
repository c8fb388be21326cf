// Requests to Microsoft Graph for one app: a bearer token on each, at most `concurrency` in flight
// per mailbox (Outlook's limit is 4) and `mailboxes x concurrency` in all, 429 waited out for the
// whole mailbox as Retry-After says, 5xx and network failures retried with exponential backoff
// and jitter, a 401 answered by a new token once. Nothing here knows messages or folders.
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type RequestOptions } from 'node:http';
import { urlToHttpOptions } from 'node:url';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { setMaxListeners } from 'node:events';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { AccessTokens } from '../../auth/entra.js';
import { redactSecrets } from '../../redact.js';
import { Slots } from '../slots.js';
import { stoppableSleep } from '../stoppable-sleep.js';

/** What Graph answered with an error: its status and OData `{"error":{"code","message"}}`. */
export class GraphError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`HTTP ${status} ${code}: ${message}`);
  }
}

/**
 * A request that must not be sent twice (a create, an attachment) whose answer was lost (network
 * failure or 5xx): it may or may not have been carried out, so it is not sent again blindly; the
 * caller waits (`pause`, Retry-After first) and looks before it sends anything again.
 */
export class UncertainError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Codes Graph gives for a mailbox that cannot be reached at all: retrying cannot help. */
const MAILBOX_GONE = new Set(['ErrorInvalidUser', 'MailboxNotEnabledForRESTAPI', 'MailboxNotSupportedForRESTAPI', 'ResourceNotFound', 'ErrorMailboxNotFound', 'ErrorNonExistentMailbox']);

/** Whether an error says the mailbox itself is unusable (unknown user, no Exchange Online licence, access denied). */
export function mailboxUnusable(err: unknown): err is GraphError {
  return err instanceof GraphError && ((err.status === 404 && MAILBOX_GONE.has(err.code)) || (err.status === 403 && err.code === 'ErrorAccessDenied'));
}

/** A 404 that is not of the mailbox (an unknown user, no mailbox): of a folder, or of a message in it. */
export function folderAnswer404(err: unknown): err is GraphError {
  return err instanceof GraphError && err.status === 404 && !MAILBOX_GONE.has(err.code);
}

export interface GraphResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body, or undefined when empty or not JSON. */
  json: unknown;
  /** The raw body, when asked for (`$value`, a create's answer). */
  bytes?: Buffer;
}

export interface GraphRequest {
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  /** A path under the endpoint (`/v1.0/users/...`), or an absolute URL (an upload session's). */
  path: string;
  body?: Buffer | string;
  contentType?: string;
  headers?: Record<string, string>;
  /** Not sent again after a network failure or 5xx: UncertainError instead (creates). */
  once?: boolean;
  /** No Authorization header (an upload URL carries its own authorization, and refuses a bearer). */
  anonymous?: boolean;
  /** Keep the raw body, not parsed when a 2xx (`$value`; a create's answer, read by answer.ts). */
  raw?: boolean;
  /** Attempts after the first, if not the client's `retries` (open() tries briefly). */
  retries?: number;
  /** Request slots it holds of its mailbox and of the client (default 1): a `$batch` Outlook runs several requests of at once holds that many. */
  slots?: number;
}

export interface GraphClientOptions {
  endpoint: string;
  concurrency: number;
  mailboxes: number;
  retries: number;
  retryDelayMs: number;
  tokens: AccessTokens;
  stop?: AbortSignal;
}

/** What the client knows of one mailbox: its request slots and until when Graph asked it to wait. */
interface MailboxState {
  slots: Slots;
  pausedUntil: number;
}

/** A path of characters a URL leaves as they are (a create's, a message's): sent without parsing. */
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&()*+,;=:@%/?]*$/;

/** The longest single wait between attempts, whatever Retry-After or the backoff says. */
const MAX_WAIT_MS = 5 * 60_000;
/** A token may take this long to come (the identity service's own retries included). */
const TOKEN_WAIT_MS = 30_000;
/** One request may take this long (a 4 MB chunk on a slow link included). */
const REQUEST_TIMEOUT_MS = 120_000;
/** A kept-alive connection unused this long is closed (sooner when the server says it keeps one for less). */
const IDLE_SOCKET_MS = 30_000;

/** What one HTTP exchange answered. */
interface Exchanged {
  status: number;
  headers: IncomingHttpHeaders;
  bytes: Buffer;
}

const EMPTY = Buffer.alloc(0);

export interface GraphStats {
  requests: number;
  throttled: number;
  retried: number;
  tokenRenewals: number;
}

export class GraphClient {
  readonly stats: GraphStats = { requests: 0, throttled: 0, retried: 0, tokenRenewals: 0 };
  private readonly all: Slots;
  private readonly byMailbox = new Map<string, MailboxState>();
  /** Set when a token could not be had: every later request fails with it. */
  private noToken: PivotArchiveError | undefined;
  private readonly httpAgent: HttpAgent;
  private readonly httpsAgent: HttpsAgent;
  /**
   * The caller's stop signal, relayed: every request and every wait listens to it, hundreds at
   * once, over Node's default of 10 listeners (whose warning would reach stderr).
   */
  private readonly stop: AbortSignal | undefined;

  /** The endpoint's protocol, host and port, parsed once. */
  private readonly origin: RequestOptions;
  /** The last token's Authorization header (see `bearer`): #private, so never serialized or inspected with the client. */
  #bearerToken: string | undefined;
  #bearerHeader = '';

  constructor(private readonly options: GraphClientOptions) {
    this.origin = urlToHttpOptions(new URL(options.endpoint));
    if (options.stop) {
      const relay = new AbortController();
      setMaxListeners(0, relay.signal);
      if (options.stop.aborted) relay.abort();
      else options.stop.addEventListener('abort', () => relay.abort(), { once: true });
      this.stop = relay.signal;
    }
    this.all = new Slots(options.mailboxes * options.concurrency);
    // One connection per request slot, kept between requests.
    // As many kept free as may be in use: with the default 256, the sockets of 800 requests in flight were closed and opened again.
    // An idle socket is closed by us before the server closes it (Node applies a server's `Keep-Alive:
    // timeout=` hint, less a second, only when the agent has a timeout of its own): a request sent on a
    // socket the server was closing failed as a network error, and a create then had to be looked up.
    const sockets = { keepAlive: true, timeout: IDLE_SOCKET_MS, maxSockets: options.mailboxes * options.concurrency + 4, maxFreeSockets: options.mailboxes * options.concurrency + 4 };
    this.httpAgent = new HttpAgent(sockets);
    this.httpsAgent = new HttpsAgent(sockets);
  }

  /** Closes the kept-alive connections (after the last request). */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  /** `/v1.0/users/<mailbox>` (or `/beta/...`), the mailbox escaped. */
  static user(version: 'v1.0' | 'beta', mailbox: string): string {
    return `/${version}/users/${encodeURIComponent(mailbox)}`;
  }

  /**
   * One request on behalf of `mailbox` (its slots, its pauses), retried as the header comment
   * says; resolves a 2xx answer and rejects a GraphError for any other (or PivotArchiveError when
   * stopped). `mailbox` undefined: a request of no mailbox (not counted against one).
   */
  send(mailbox: string | undefined, request: GraphRequest): Promise<GraphResponse> {
    return this.attempt(mailbox, request, 0, false);
  }

  // A request waits for its answer 100 ms and more, hundreds at once: the functions it waits in are
  // not async ones (`attempt`, `once`, `fetch`'s end), whose suspended frames outlived V8's young
  // generation and were promoted (see GraphSink.store).
  /** Attempt `attempt` (0 the first) of `send`; `renewed`: a new token was asked for after a 401. */
  private attempt(mailbox: string | undefined, request: GraphRequest, attempt: number, renewed: boolean): Promise<GraphResponse> {
    if (this.stopped) return Promise.reject(stoppedError());
    return this.once(mailbox, request).then(
      (answer) => (answer.status < 300 ? answer : this.afterFailure(mailbox, request, attempt, renewed, answer, undefined)),
      (err: unknown) => {
        if (err instanceof PivotArchiveError) throw err;
        return this.afterFailure(mailbox, request, attempt, renewed, undefined, err);
      },
    );
  }

  /** An attempt answered with an error (`answer`) or not at all (`failure`): tried again as the header comment says, or its error. */
  private async afterFailure(mailbox: string | undefined, request: GraphRequest, attempt: number, renewed: boolean, answer: GraphResponse | undefined, failure: unknown): Promise<GraphResponse> {
    const error = answer ? graphErrorOf(answer.status, answer.json) : undefined;
    if (error?.status === 401 && !request.anonymous && !renewed) {
      // An expired or revoked token: ask for a new one, once.
      this.renewToken();
      return this.attempt(mailbox, request, attempt, true);
    }
    const transient = !answer || answer.status >= 500 || answer.status === 429;
    const retryAfter = answer ? retryAfterMs(answer.headers) : undefined;
    // Whatever attempts are left: the caller must look before it gives up (a 429 was not carried out).
    if (transient && request.once && answer?.status !== 429) throw new UncertainError(error ? error.message : `network failure: ${errorMessage(failure)}`, retryAfter);
    if (!transient || attempt >= (request.retries ?? this.options.retries)) {
      if (error) throw error;
      throw new GraphError(0, 'NetworkError', errorMessage(failure));
    }
    attempt++;
    this.stats.retried++;
    if (answer?.status === 429) {
      this.stats.throttled++;
      // Throttling is per mailbox: every request of that mailbox waits, not this one alone.
      const wait = this.retryWait(attempt, retryAfter);
      if (mailbox !== undefined) this.holdOff(mailbox, wait);
      else await this.sleep(wait);
    } else {
      await this.sleep(this.retryWait(attempt, retryAfter));
    }
    return this.attempt(mailbox, request, attempt, renewed);
  }

  /**
   * The wait before attempt `attempt` (1 for the first retry) of a request the caller retries
   * itself (after an UncertainError): Retry-After when Graph gave one, else the backoff.
   */
  async pause(attempt: number, retryAfter: number | undefined): Promise<void> {
    this.stats.retried++;
    await this.sleep(this.retryWait(attempt, retryAfter));
  }

  /** How long to wait before attempt `attempt`: Retry-After when given, else the backoff; never over MAX_WAIT_MS. */
  retryWait(attempt: number, retryAfter: number | undefined): number {
    return Math.min(retryAfter ?? this.backoff(attempt), MAX_WAIT_MS);
  }

  /** `retryDelay * 2^(attempt-1)`, at most 30 s, with full jitter over its upper half. */
  private backoff(attempt: number): number {
    const ceiling = Math.min(this.options.retryDelayMs * 2 ** (attempt - 1), 30_000);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Graph refused the token (401): the next request asks for a new one. */
  renewToken(): void {
    this.stats.tokenRenewals++;
    this.options.tokens.forget();
  }

  /** Graph asked a request of `mailbox` to wait (a 429, or a create of a batch): none of its requests goes for `ms`. */
  holdOff(mailbox: string, ms: number): void {
    const state = this.mailbox(mailbox);
    state.pausedUntil = Math.max(state.pausedUntil, Date.now() + Math.min(ms, MAX_WAIT_MS));
  }

  private mailbox(mailbox: string): MailboxState {
    let state = this.byMailbox.get(mailbox);
    if (!state) this.byMailbox.set(mailbox, (state = { slots: new Slots(this.options.concurrency), pausedUntil: 0 }));
    return state;
  }

  /** One attempt, in a slot of its mailbox and one of the whole client. */
  private once(mailbox: string | undefined, request: GraphRequest): Promise<GraphResponse> {
    const state = mailbox === undefined ? undefined : this.mailbox(mailbox);
    const slots = Math.min(request.slots ?? 1, this.options.concurrency);
    if (state && !state.slots.tryTake(slots)) return this.onceWaiting(state, slots, request, false);
    if ((state && state.pausedUntil > Date.now()) || !this.all.tryTake(slots)) return this.onceWaiting(state, slots, request, true);
    return this.fetchIn(state, slots, request);
  }

  /** `once` when it must wait: for its mailbox's slots (unless it `holds` them already), for the mailbox's pause, or for the client's slots. */
  private async onceWaiting(state: MailboxState | undefined, slots: number, request: GraphRequest, holds: boolean): Promise<GraphResponse> {
    if (state && !holds) await state.slots.wait(slots);
    try {
      // A 429 for this mailbox pauses it: wait in the slot, so no other request of it goes either.
      while (state && state.pausedUntil > Date.now()) await this.sleep(state.pausedUntil - Date.now());
      if (!this.all.tryTake(slots)) await this.all.wait(slots);
    } catch (err) {
      state?.slots.give(slots);
      throw err;
    }
    return this.fetchIn(state, slots, request);
  }

  /** The request sent in the slots taken (`slots` of the client's, and of its mailbox's), given back once it is answered. */
  private fetchIn(state: MailboxState | undefined, slots: number, request: GraphRequest): Promise<GraphResponse> {
    const giveBack = () => {
      this.all.give(slots);
      state?.slots.give(slots);
    };
    return this.fetch(request).then(
      (answer) => {
        giveBack();
        return answer;
      },
      (err: unknown) => {
        giveBack();
        throw err;
      },
    );
  }

  private async fetch(request: GraphRequest): Promise<GraphResponse> {
    this.throwIfStopped();
    if (this.noToken && !request.anonymous) throw this.noToken;
    const headers: Record<string, string> = request.headers === undefined ? {} : { ...request.headers };
    if (!request.anonymous) headers.authorization = this.bearer(this.options.tokens.current?.() ?? (await this.token()));
    if (request.contentType) headers['content-type'] = request.contentType;
    const body = typeof request.body === 'string' ? Buffer.from(request.body) : request.body;
    if (body) headers['content-length'] = String(body.length);
    // A plain path under the endpoint goes to the endpoint's origin parsed once; any other is parsed (and escaped) as a URL.
    const target = PLAIN_PATH.test(request.path) ? this.origin : urlToHttpOptions(new URL(/^https?:/.test(request.path) ? request.path : `${this.options.endpoint}${request.path}`));
    const path = target === this.origin ? request.path : target.path;
    this.stats.requests++;
    // Returned, not awaited (see `attempt`).
    return this.exchange(target, path, request.method, headers, body).then(
      (answer) => answerOf(request, answer),
      (err: unknown) => {
        this.throwIfStopped();
        throw new Error(redactSecrets(`${request.method} ${target.protocol}//${target.hostname}${target.port ? `:${target.port}` : ''}${(path ?? '').replace(/\?.*/, '')}: ${errorMessage(err)}`));
      },
    );
  }

  /** The Authorization header of a token, made once per token (not a new string of a JWT's length per request). */
  private bearer(token: string): string {
    if (token !== this.#bearerToken) {
      this.#bearerToken = token;
      this.#bearerHeader = `Bearer ${token}`;
    }
    return this.#bearerHeader;
  }

  /**
   * A token when none is current (`fetch` takes a current one without this), or E_SINK_UNAVAILABLE when none comes within TOKEN_WAIT_MS: @azure/identity's
   * managed-identity credential was seen waiting without end once its endpoint had gone.
   */
  private async token(): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `no access token came within ${TOKEN_WAIT_MS / 1000} s`)), TOKEN_WAIT_MS);
    });
    try {
      return await Promise.race([this.options.tokens.get(), late]);
    } catch (err) {
      // No token for one request is none for any: the requests queued behind it fail at once.
      if (err instanceof PivotArchiveError && err.code === ErrorCode.SINK_UNAVAILABLE) this.noToken ??= err;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One HTTP exchange over a kept-alive connection (node:http rather than fetch: at hundreds of
   * requests a second fetch's web streams cost a measurable share of a core).
   */
  private exchange(target: RequestOptions, path: string | null | undefined, method: string, headers: Record<string, string>, body: Buffer | undefined): Promise<Exchanged> {
    const secure = target.protocol === 'https:';
    // The stop signal itself, and the socket's own timeout: no signal made per request (AbortSignal.any
    // and .timeout made garbage and timers at hundreds of requests a second).
    const stop = this.stop;
    return new Promise((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)({ ...target, path, method, headers, agent: secure ? this.httpsAgent : this.httpAgent, timeout: REQUEST_TIMEOUT_MS, ...(stop ? { signal: stop } : {}) }, (res) => {
        // Most answers come in one chunk: kept as it is, not copied into a new buffer.
        let first: Buffer | undefined;
        let chunks: Buffer[] | undefined;
        res.on('data', (chunk: Buffer) => {
          if (first === undefined) first = chunk;
          else (chunks ??= [first]).push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes: chunks !== undefined ? Buffer.concat(chunks) : (first ?? EMPTY) }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer in ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Waits, unless the stop signal ends the wait (then rejects as stopped). */
  private async sleep(ms: number): Promise<void> {
    if (await stoppableSleep(Math.max(0, ms), this.stop)) throw stoppedError();
  }

  /** Whether the stop signal came. */
  get stopped(): boolean {
    return this.stop?.aborted === true;
  }

  private throwIfStopped(): void {
    if (this.stopped) throw stoppedError();
  }
}


/** What an exchange answered, as `send` gives it: the body parsed as JSON unless `raw` keeps a 2xx's bytes. */
function answerOf(request: GraphRequest, answer: Exchanged): GraphResponse {
  const { status, bytes } = answer;
  let json: unknown;
  if (!request.raw || status >= 300) {
    try {
      json = bytes.length > 0 ? JSON.parse(bytes.toString('utf8')) : undefined;
    } catch {
      json = undefined;
    }
  }
  return request.raw ? { status, headers: answer.headers, json, bytes } : { status, headers: answer.headers, json };
}

/** Said of a request not sent and of one cut while Graph worked on it alike: the second may be stored (helper-95 found 120 such). */
const STOPPED_REASON = 'stopped by a signal before Graph confirmed it stored: it may be in the mailbox all the same (a re-run finds it there and skips it, or delivers it)';

function stoppedError(): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.SINK_WRITE, STOPPED_REASON);
}

/** Retry-After in seconds (Graph's form) or an HTTP date, in ms (header names lower-cased). */
export function retryAfterMs(headers: IncomingHttpHeaders | Record<string, string>): number | undefined {
  const value = headers['retry-after'];
  if (typeof value !== 'string' || !value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** The GraphError of an error answer's status and OData body (`{"error":{"code","message"}}`), its message redacted. */
export function graphErrorOf(status: number, json: unknown): GraphError {
  const body = json as { error?: { code?: unknown; message?: unknown } } | undefined;
  const code = typeof body?.error?.code === 'string' ? body.error.code : 'UnknownError';
  const message = typeof body?.error?.message === 'string' ? body.error.message : '(no message)';
  return new GraphError(status, code, redactSecrets(message));
}
