import { describe, expect, it } from "vitest";
import type { RunPublic } from "../../api/types";
import { bumpAlerts } from "./live";

const run = (id: string, last_seq: number, alert_count = 0) => ({ id, last_seq, alert_count }) as unknown as RunPublic;

describe("bumpAlerts", () => {
  it("counts a live alert once, and not one a run snapshot already counts", () => {
    const rows = [run("a", 10, 1), run("b", 3)];
    const once = bumpAlerts(rows, { run_id: "a", seq: 12, kind: "grad_spike" });
    expect(once[0]).toMatchObject({ alert_count: 2, last_seq: 12 });
    expect(once[1]).toBe(rows[1]);
    expect(bumpAlerts(once, { run_id: "a", seq: 12 })).toBe(once); // the same alert again
    expect(bumpAlerts(rows, { run_id: "a", seq: 9 })).toBe(rows); // older than the snapshot
    expect(bumpAlerts(rows, { run_id: "zzz", seq: 99 })).toBe(rows);
  });
});
