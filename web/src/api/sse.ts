// A parser of the text/event-stream format (WHATWG HTML, "Server-sent events"), fed chunk by chunk.

export interface SseMessage {
  event: string;
  data: string;
  /** The last event id in force when this message was dispatched (null: none yet). */
  id: string | null;
}

export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private sawData = false;
  lastEventId: string | null = null;
  retry: number | null = null;

  /** Feed decoded text; returns the messages completed by it. */
  feed(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const out: SseMessage[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) break;
      // a lone "\r" at the very end may be the first half of "\r\n": wait for more
      if (m[0] === "\r" && m.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      const msg = this.line(line);
      if (msg) out.push(msg);
    }
    return out;
  }

  private line(line: string): SseMessage | null {
    if (line === "") {
      if (!this.sawData) {
        this.event = "";
        return null;
      }
      const msg = { event: this.event || "message", data: this.data.join("\n"), id: this.lastEventId };
      this.data = [];
      this.event = "";
      this.sawData = false;
      return msg;
    }
    if (line.startsWith(":")) return null; // a comment (keep-alive ping)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.sawData = true;
    } else if (field === "event") {
      this.event = value;
    } else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.retry = Number(value);
    }
    return null;
  }
}
