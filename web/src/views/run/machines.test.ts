import { describe, expect, it } from "vitest";
import type { WorkerPublic } from "../../api/types";
import { fmtMemory, fmtPercent, fmtTemperature, machineRows, showMachines } from "./machines";

const NOW = Date.parse("2026-11-30T12:00:00Z");
const GIB = 2 ** 30;

function worker(id: string, secondsAgo: number, telemetry: Record<string, unknown>, online = true): WorkerPublic {
  const last = new Date(NOW - secondsAgo * 1000).toISOString();
  return {
    id,
    host: `${id}.lab`,
    queue: null,
    version: null,
    online,
    state: online ? "idle" : "stopped",
    current_run_id: null,
    first_seen: last,
    last_seen: last,
    telemetry,
  };
}

const gpuAgent = (devices: number[]) => ({ devices, device_kind: "gpu", slots: [] });

describe("showMachines", () => {
  it("shows a placed run while it is queued (reserved) or running, and never an unplaced or ended one", () => {
    const placement = [{ worker_id: "a", host: "a", devices: [0] }];
    expect(showMachines({ status: "running", placement })).toBe(true);
    expect(showMachines({ status: "queued", placement })).toBe(true);
    expect(showMachines({ status: "succeeded", placement })).toBe(false);
    expect(showMachines({ status: "running", placement: null })).toBe(false);
    expect(showMachines({ status: "queued", placement: [] })).toBe(false);
  });
});

describe("machineRows", () => {
  it("keeps node order, marks node 0 as the rendezvous, and picks this run's GPUs by NVML index", () => {
    const workers = [
      worker("a", 3, {
        agent: gpuAgent([0, 1, 2, 3]),
        cpu_percent: 12,
        gpus: [0, 1, 2, 3].map((i) => ({
          index: i,
          name: "H100",
          utilization: 90 + i,
          memory_used: (10 + i) * GIB,
          memory_total: 80 * GIB,
          temperature: 60 + i,
        })),
      }),
      worker("b", 1, { agent: gpuAgent([0, 1]), gpus: [{ index: 0, name: "A100", utilization: 5 }] }),
    ];
    const rows = machineRows(
      [
        { worker_id: "b", host: "box-b", devices: [1, 0] },
        { worker_id: "a", devices: [3, 1] },
      ],
      workers,
      NOW,
    );
    expect(rows.map((r) => [r.node, r.workerId, r.host, r.rendezvous, r.alive, r.heartbeat, r.kind])).toEqual([
      [0, "b", "box-b", true, true, "1s ago", "gpu"],
      [1, "a", "a.lab", false, true, "3s ago", "gpu"],
    ]);
    // b's heartbeat lists no GPU 1: that device has no reading rather than another GPU's.
    expect(rows[0].devices.map((d) => [d.label, d.gpu?.utilization ?? null])).toEqual([
      ["GPU 1", null],
      ["GPU 0", 5],
    ]);
    expect(rows[1].devices.map((d) => [d.label, d.gpu?.utilization, d.gpu?.temperature])).toEqual([
      ["GPU 3", 93, 63],
      ["GPU 1", 91, 61],
    ]);
    expect(fmtMemory(rows[1].devices[0].gpu)).toBe("13.0 GiB / 80.0 GiB");
  });

  it("says a machine is quiet past the 30 s TTL, stopped, or never heard from", () => {
    const rows = machineRows(
      [
        { worker_id: "fresh", devices: [0] },
        { worker_id: "edge", devices: [0] },
        { worker_id: "quiet", devices: [0] },
        { worker_id: "stopped", devices: [0] },
        { worker_id: "ghost", host: "ghost-host", devices: [2] },
      ],
      [worker("fresh", 29, {}), worker("edge", 30, {}), worker("quiet", 31, {}), worker("stopped", 2, {}, false)],
      NOW,
    );
    expect(rows.map((r) => [r.workerId, r.alive, r.heartbeat])).toEqual([
      ["fresh", true, "29s ago"],
      ["edge", true, "30s ago"],
      ["quiet", false, "no heartbeat for 31s"],
      ["stopped", false, "no heartbeat for 2s"],
      ["ghost", false, "no heartbeat"],
    ]);
    expect(rows[4].host).toBe("ghost-host");
    expect(rows[4].devices).toEqual([{ device: 2, label: "GPU 2", gpu: null }]);
  });

  it("gives a CPU-slot agent's machine its CPU % and no GPU readings", () => {
    const [row] = machineRows(
      [{ worker_id: "c", devices: [0, 1] }],
      [
        worker("c", 2, {
          agent: { devices: [0, 1, 2], device_kind: "cpu", slots: [] },
          cpu_percent: 47.6,
          gpus: [{ index: 0, utilization: 99 }],
        }),
      ],
      NOW,
    );
    expect(row.kind).toBe("cpu");
    expect(row.devices.map((d) => [d.label, d.gpu])).toEqual([
      ["CPU 0", null],
      ["CPU 1", null],
    ]);
    expect(fmtPercent(row.cpuPercent)).toBe("48%");
  });

  it("has rows before the workers list has loaded", () => {
    const rows = machineRows([{ worker_id: "a", devices: [0] }], null, NOW);
    expect(rows.map((r) => [r.alive, r.heartbeat, r.cpuPercent])).toEqual([[false, "no heartbeat", null]]);
  });
});

describe("formatting a reading", () => {
  it("prints what the heartbeat has and a dash for what it lacks", () => {
    expect(fmtPercent(null)).toBe("—");
    expect(fmtPercent(0)).toBe("0%");
    expect(fmtMemory(null)).toBe("—");
    expect(fmtMemory({ memory_used: 512 * 2 ** 20, memory_total: null })).toBe("512 MiB / —");
    expect(fmtTemperature({ temperature: 71 })).toBe("71 °C");
    expect(fmtTemperature({})).toBe("—");
  });
});
