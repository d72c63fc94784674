import { describe, expect, it } from "vitest";
import type { WorkerTelemetry } from "../../api/types";
import { appendSample, historyCharts, mergeSamples, type Sample } from "./history";

const at = (time: number, telemetry: WorkerTelemetry = {}): Sample => ({ time, telemetry });

describe("mergeSamples / appendSample", () => {
  it("follows the API's history with the live beats newer than it, the newest kept", () => {
    const fetched = [at(1), at(2), at(3)];
    const live = [at(2.9), at(3.0004, { cpu_percent: 9 }), at(4, { cpu_percent: 7 })];
    const merged = mergeSamples(fetched, live);
    expect(merged.map((s) => s.time)).toEqual([1, 2, 3, 4]); // 3.0004 is the stored beat 3 seen live
    expect(merged[3].telemetry.cpu_percent).toBe(7);
    expect(mergeSamples(fetched, live, 2).map((s) => s.time)).toEqual([3, 4]);
    expect(mergeSamples([], live).map((s) => s.time)).toEqual([2.9, 3.0004, 4]);
  });
  it("appends only a newer beat and caps the list", () => {
    const list = [at(1), at(2)];
    expect(appendSample(list, at(2))).toBe(list);
    expect(appendSample(list, at(1.5))).toBe(list);
    expect(appendSample(list, at(3)).map((s) => s.time)).toEqual([1, 2, 3]);
    expect(appendSample(list, at(3), 2).map((s) => s.time)).toEqual([2, 3]);
    expect(list.map((s) => s.time)).toEqual([1, 2]); // not changed in place
  });
});

describe("historyCharts", () => {
  it("charts CPU and each GPU's utilisation, memory in % and temperature, gaps where a reading is missing", () => {
    const gpu = (index: number, utilization: number | null, temperature: number) => ({
      index,
      utilization,
      temperature,
      memory_used: 20,
      memory_total: 80,
    });
    const c = historyCharts([
      at(10, { cpu_percent: 50, memory_used: 4, memory_total: 16, gpus: [gpu(0, 90, 60), gpu(1, null, 55)] }),
      at(15, { cpu_percent: 70, gpus: [gpu(0, 95, 61), gpu(1, 40, 56)] }),
    ]);
    expect(c.utilisation.map((l) => l.label)).toEqual(["CPU", "GPU 0", "GPU 1"]);
    expect(c.utilisation[0].series.step).toEqual([10, 15]);
    expect(c.utilisation[0].series.value).toEqual([50, 70]);
    expect(c.utilisation[2].series.step).toEqual([15]); // GPU 1's missing reading is a gap, not a NaN
    expect(c.memory.map((l) => [l.label, l.series.value])).toEqual([
      ["RAM", [25]],
      ["GPU 0", [25, 25]],
      ["GPU 1", [25, 25]],
    ]);
    expect(c.temperature.map((l) => l.series.value)).toEqual([
      [60, 61],
      [55, 56],
    ]);
  });
  it("gives a CPU worker no GPU lines and no temperature chart", () => {
    const c = historyCharts([at(1, { cpu_percent: 5, memory_used: 1, memory_total: 2, gpus: [] }), at(2, {})]);
    expect(c.utilisation.map((l) => l.label)).toEqual(["CPU"]);
    expect(c.memory.map((l) => l.label)).toEqual(["RAM"]);
    expect(c.temperature).toEqual([]);
    expect(historyCharts([])).toEqual({ utilisation: [], memory: [], temperature: [] });
  });
});
