// One live-stream client for the server's SSE endpoints, over fetch streaming (so that it can send
// Last-Event-ID itself on every reconnect, which EventSource cannot after a manual reconnect).
//
// Per-run streams ("seq" mode): ids are the event seq; the client resumes with ?after_seq=<last seq> and
// Last-Event-ID, and drops any event whose seq is not above the last one delivered, so a reconnect gives
// neither duplicates nor gaps. The team stream ("id" mode): ids are opaque; resume with Last-Event-ID.
import { SseParser } from "./sse";

export type LiveState = "connecting" | "live" | "reconnecting" | "offline" | "closed";

export interface StreamMessage {
  event: string;
  data: unknown;
  id: string | null;
}

interface ReaderLike {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(): Promise<void>;
}

export interface ResponseLike {
  ok: boolean;
  status: number;
  body: { getReader(): ReaderLike } | null;
}

export type FetchLike = (
  url: string,
  init: { headers: Record<string, string>; signal: AbortSignal; credentials: RequestCredentials },
) => Promise<ResponseLike>;

export interface StreamOptions {
  /** Path of the stream, e.g. /api/v1/runs/abc/stream. */
  url: string;
  mode: "seq" | "id";
  /** seq mode: deliver only events after this seq (e.g. the run's last_seq when its data came over REST). */
  afterSeq?: number;
  onMessage: (msg: StreamMessage) => void;
  onState?: (state: LiveState) => void;
  /** Called when the server answers 401 (the client stops). */
  onUnauthorized?: () => void;
  fetch?: FetchLike;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  /** Backoff of reconnects: initial and maximum delay (ms). */
  backoffMs?: [number, number];
  /** Failed attempts in a row before the state reads "offline" (it keeps retrying). */
  offlineAfter?: number;
  /** A connection silent this long (no byte, not even the server's 15 s ping) is dropped and reopened. */
  idleTimeoutMs?: number;
  random?: () => number;
}

export class LiveStream {
  lastSeq: number;
  lastId: string | null = null;
  state: LiveState = "connecting";
  /** Number of connections opened (for tests and diagnostics). */
  connects = 0;
  private failures = 0;
  private closed = false;
  private abort: AbortController | null = null;
  private timer: unknown = null;
  private idleTimer: unknown = null;
  private serverRetry: number | null = null;
  private readonly o: Required<Omit<StreamOptions, "afterSeq" | "onUnauthorized">> &
    Pick<StreamOptions, "onUnauthorized">;

  constructor(opts: StreamOptions) {
    this.lastSeq = opts.afterSeq ?? -1;
    const g = globalThis as unknown as { fetch: FetchLike };
    this.o = {
      onState: () => {},
      fetch: (url, init) => g.fetch(url, init),
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (h) => globalThis.clearTimeout(h as number),
      backoffMs: [500, 15_000],
      offlineAfter: 3,
      idleTimeoutMs: 45_000,
      random: Math.random,
      ...opts,
    };
  }

  start(): this {
    void this.connect();
    return this;
  }

  close(): void {
    this.closed = true;
    this.abort?.abort();
    if (this.timer !== null) this.o.clearTimeout(this.timer);
    if (this.idleTimer !== null) this.o.clearTimeout(this.idleTimer);
    this.setState("closed");
  }

  /** Drop the current connection and reconnect now (e.g. the browser came back online). */
  kick(): void {
    if (this.closed) return;
    this.abort?.abort();
  }

  private setState(s: LiveState): void {
    if (this.state === s) return;
    this.state = s;
    this.o.onState(s);
  }

  private urlNow(): string {
    if (this.o.mode !== "seq") return this.o.url;
    const sep = this.o.url.includes("?") ? "&" : "?";
    return `${this.o.url}${sep}after_seq=${this.lastSeq}`;
  }

  private armIdle(ctrl: AbortController): void {
    if (this.idleTimer !== null) this.o.clearTimeout(this.idleTimer);
    this.idleTimer = this.o.setTimeout(() => ctrl.abort(), this.o.idleTimeoutMs);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    this.timer = null;
    const ctrl = new AbortController();
    this.abort = ctrl;
    this.connects += 1;
    const headers: Record<string, string> = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
    const resumeId = this.o.mode === "seq" ? (this.lastSeq >= 0 ? String(this.lastSeq) : null) : this.lastId;
    if (resumeId !== null) headers["Last-Event-ID"] = resumeId;
    let received = false;
    try {
      this.armIdle(ctrl);
      const res = await this.o.fetch(this.urlNow(), { headers, signal: ctrl.signal, credentials: "same-origin" });
      if (res.status === 401) {
        this.closed = true;
        this.setState("offline");
        this.o.onUnauthorized?.();
        return;
      }
      if (res.status === 404 || res.status === 403) {
        this.closed = true;
        this.setState("offline");
        return;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      this.setState("live");
      const reader = res.body.getReader();
      const parser = new SseParser();
      parser.lastEventId = resumeId;
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.closed) break;
        this.armIdle(ctrl);
        for (const msg of parser.feed(decoder.decode(value, { stream: true }))) {
          received = true;
          this.deliver(msg.event, msg.data, msg.id);
        }
        if (parser.retry !== null) this.serverRetry = parser.retry;
      }
    } catch {
      // network error, abort (idle or kick): reconnect below
    }
    if (this.idleTimer !== null) this.o.clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (this.closed) return;
    this.scheduleReconnect(received);
  }

  private deliver(event: string, raw: string, id: string | null): void {
    if (this.o.mode === "seq" && id !== null && /^\d+$/.test(id)) {
      const seq = Number(id);
      if (seq <= this.lastSeq) return; // a duplicate from the overlap of replay and live
      this.lastSeq = seq;
    }
    if (id !== null) this.lastId = id;
    let data: unknown = raw;
    try {
      data = JSON.parse(raw);
    } catch {
      /* keep the text */
    }
    this.o.onMessage({ event, data, id });
  }

  private scheduleReconnect(received: boolean): void {
    if (received) this.failures = 0;
    this.failures += 1;
    this.setState(this.failures > this.o.offlineAfter ? "offline" : "reconnecting");
    const [lo, hi] = this.o.backoffMs;
    const exp = Math.min(hi, lo * 2 ** (this.failures - 1));
    const jitter = 0.75 + 0.5 * this.o.random();
    const delay = Math.max(this.serverRetry ?? 0, Math.round(exp * jitter));
    this.timer = this.o.setTimeout(() => void this.connect(), delay);
  }
}

/** The URL of a run's stream and of the team's. */
export const runStreamUrl = (runId: string) => `/api/v1/runs/${encodeURIComponent(runId)}/stream`;
export const teamStreamUrl = "/api/v1/stream";
