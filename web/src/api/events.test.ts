import { describe, expect, it } from "vitest";
import { LiveStream, type FetchLike, type LiveState, type ResponseLike, type StreamMessage } from "./events";
import { SseParser } from "./sse";

/** A fake server: each fetch opens a connection whose body the test writes to and can drop. */
class FakeServer {
  calls: { url: string; headers: Record<string, string> }[] = [];
  conns: FakeConn[] = [];
  status = 200;
  fetch: FetchLike = async (url, init) => {
    this.calls.push({ url, headers: init.headers });
    const conn = new FakeConn(init.signal);
    this.conns.push(conn);
    const res: ResponseLike = { ok: this.status < 400, status: this.status, body: { getReader: () => conn } };
    return res;
  };
  get last(): FakeConn {
    return this.conns[this.conns.length - 1];
  }
}

class FakeConn {
  private queue: ({ done: boolean; value?: Uint8Array } | Error)[] = [];
  private waiting: ((v: { done: boolean; value?: Uint8Array } | Error) => void) | null = null;
  constructor(signal: AbortSignal) {
    signal.addEventListener("abort", () => this.push(new Error("aborted")));
  }
  private push(item: { done: boolean; value?: Uint8Array } | Error): void {
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w(item);
    } else this.queue.push(item);
  }
  write(text: string): void {
    this.push({ done: false, value: new TextEncoder().encode(text) });
  }
  drop(): void {
    this.push(new Error("network error"));
  }
  end(): void {
    this.push({ done: true });
  }
  async read(): Promise<{ done: boolean; value?: Uint8Array }> {
    const item =
      this.queue.shift() ??
      (await new Promise<{ done: boolean; value?: Uint8Array } | Error>((r) => (this.waiting = r)));
    if (item instanceof Error) throw item;
    return item;
  }
  async cancel(): Promise<void> {}
}

/** Timers the test fires by hand. */
class ManualTimers {
  pending: { fn: () => void; ms: number; id: number }[] = [];
  private next = 1;
  set = (fn: () => void, ms: number) => {
    const id = this.next++;
    this.pending.push({ fn, ms, id });
    return id;
  };
  clear = (h: unknown) => {
    this.pending = this.pending.filter((t) => t.id !== h);
  };
  /** Fire the reconnect timer (the shortest one that is not the idle watchdog). */
  fireReconnect(): number {
    const t = this.pending.filter((p) => p.ms < 45_000).sort((a, b) => a.ms - b.ms)[0];
    if (!t) throw new Error("no reconnect scheduled");
    this.clear(t.id);
    t.fn();
    return t.ms;
  }
}

const ev = (seq: number, step: number) =>
  `id: ${seq}\nevent: metrics\ndata: ${JSON.stringify({ run_id: "r", seq, time: 0, type: "metrics", payload: { step, values: { loss: 1 } } })}\n\n`;
const flush = () => new Promise((r) => setTimeout(r, 0));

function setup(afterSeq = -1) {
  const server = new FakeServer();
  const timers = new ManualTimers();
  const got: StreamMessage[] = [];
  const states: LiveState[] = [];
  const stream = new LiveStream({
    url: "/api/v1/runs/r/stream",
    mode: "seq",
    afterSeq,
    fetch: server.fetch,
    onMessage: (m) => got.push(m),
    onState: (s) => states.push(s),
    setTimeout: timers.set,
    clearTimeout: timers.clear,
    random: () => 0.5,
  }).start();
  return { server, timers, got, states, stream };
}

describe("SseParser", () => {
  it("parses events split across chunks, multi-line data, comments and CRLF", () => {
    const p = new SseParser();
    expect(p.feed(': ping\r\nid: 7\r\nevent: metrics\r\ndata: {"a":')).toEqual([]);
    const out = p.feed("1}\r\ndata: x\r\n\r\nretry: 1000\n\n");
    expect(out).toEqual([{ event: "metrics", data: '{"a":1}\nx', id: "7" }]);
    expect(p.retry).toBe(1000);
  });
});

describe("LiveStream resume", () => {
  it("reconnects after a drop with the last seq, and delivers no duplicate and no gap", async () => {
    const { server, timers, got, states, stream } = setup(4);
    await flush();
    expect(server.calls[0].url).toBe("/api/v1/runs/r/stream?after_seq=4");
    expect(server.calls[0].headers["Last-Event-ID"]).toBe("4");
    server.last.write(ev(5, 50) + ev(6, 60));
    server.last.write(ev(7, 70).slice(0, 20)); // half an event, then the connection drops
    await flush();
    expect(stream.state).toBe("live");
    server.last.drop();
    await flush();
    expect(stream.state).toBe("reconnecting");
    timers.fireReconnect();
    await flush();
    expect(server.calls).toHaveLength(2);
    expect(server.calls[1].url).toBe("/api/v1/runs/r/stream?after_seq=6");
    expect(server.calls[1].headers["Last-Event-ID"]).toBe("6");
    // the server replays from 7 but overlaps (6 again, as replay and live may): the client drops it
    server.last.write(ev(6, 60) + ev(7, 70) + ev(8, 80));
    await flush();
    expect(got.map((m) => Number(m.id))).toEqual([5, 6, 7, 8]);
    expect(got.map((m) => (m.data as { payload: { step: number } }).payload.step)).toEqual([50, 60, 70, 80]);
    expect(states).toEqual(["live", "reconnecting", "live"]);
    stream.close();
  });

  it("ignores events at or below the seq it started after", async () => {
    const { server, got, stream } = setup(10);
    await flush();
    server.last.write(ev(9, 1) + ev(10, 2) + ev(11, 3));
    await flush();
    expect(got.map((m) => m.id)).toEqual(["11"]);
    stream.close();
  });

  it("backs off exponentially while the server is down and reads offline, then recovers", async () => {
    const { server, timers, got, stream } = setup();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      server.last.drop();
      await flush();
      delays.push(timers.fireReconnect());
      await flush();
    }
    expect(delays).toEqual([500, 1000, 2000, 4000]);
    server.last.drop();
    await flush();
    expect(stream.state).toBe("offline");
    timers.fireReconnect();
    await flush();
    server.last.write(ev(0, 0));
    await flush();
    expect(stream.state).toBe("live");
    expect(got).toHaveLength(1);
    stream.close();
  });

  it("team stream resumes with the opaque Last-Event-ID and no after_seq", async () => {
    const server = new FakeServer();
    const timers = new ManualTimers();
    const got: StreamMessage[] = [];
    const stream = new LiveStream({
      url: "/api/v1/stream",
      mode: "id",
      fetch: server.fetch,
      onMessage: (m) => got.push(m),
      setTimeout: timers.set,
      clearTimeout: timers.clear,
    }).start();
    await flush();
    expect(server.calls[0].headers["Last-Event-ID"]).toBeUndefined();
    server.last.write('id: e1-3\nevent: run\ndata: {"id":"a","status":"running"}\n\n');
    server.last.write("retry: 1000\n: connection lifetime reached: reconnect\n\n");
    await flush();
    server.last.end();
    await flush();
    expect(timers.fireReconnect()).toBeGreaterThanOrEqual(1000);
    await flush();
    expect(server.calls[1].url).toBe("/api/v1/stream");
    expect(server.calls[1].headers["Last-Event-ID"]).toBe("e1-3");
    expect(got.map((m) => m.event)).toEqual(["run"]);
    stream.close();
  });

  it("stops on 401 and reports it", async () => {
    const server = new FakeServer();
    server.status = 401;
    let unauthorized = 0;
    const stream = new LiveStream({
      url: "/x",
      mode: "seq",
      fetch: server.fetch,
      onMessage: () => {},
      onUnauthorized: () => unauthorized++,
    }).start();
    await flush();
    expect(unauthorized).toBe(1);
    expect(stream.state).toBe("offline");
    expect(server.calls).toHaveLength(1);
  });
});
