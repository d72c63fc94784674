import { describe, expect, it } from "vitest";
import { deviceChips } from "./devices";

describe("deviceChips", () => {
  it("gives a one-GPU worker (no agent) none", () => {
    expect(deviceChips({ gpus: [] })).toBeNull();
    expect(deviceChips(undefined)).toBeNull();
    expect(deviceChips({ agent: { devices: "0,1" } })).toBeNull();
  });
  it("shows each device free, held by a run, or held by another team's run", () => {
    const chips = deviceChips({
      agent: {
        devices: [3, 0, 1, 2, 1],
        device_kind: "gpu",
        slots: [
          { device: 0, run_id: "ab12", attempt: 2 },
          { device: 1, run_id: "ab12", attempt: 2 },
          { device: 2, run_id: null, attempt: null, hidden: true },
          { device: 3, run_id: null, attempt: null },
        ],
      },
    });
    expect(chips?.map((c) => [c.label, c.state, c.runId, c.attempt])).toEqual([
      ["GPU 0", "held", "ab12", 2],
      ["GPU 1", "held", "ab12", 2],
      ["GPU 2", "hidden", null, null],
      ["GPU 3", "free", null, null],
    ]);
  });
  it("names CPU slots, and a device missing from the slots is free", () => {
    const chips = deviceChips({ agent: { devices: [0, 1], device_kind: "cpu", slots: [{ device: 5, run_id: "x" }] } });
    expect(chips?.map((c) => [c.label, c.state])).toEqual([
      ["CPU 0", "free"],
      ["CPU 1", "free"],
    ]);
  });
});
