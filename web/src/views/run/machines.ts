// The machines of a placed run as its Machines panel shows them: the run's placement (node order) joined with the
// workers' latest heartbeats (the Workers page's list, kept live by the team stream). Pure functions, tested
// without a browser: who is quiet (no heartbeat within the server's TTL), and the telemetry of this run's devices.
import type { GpuTelemetry, RunPublic, WorkerPublic } from "../../api/types";
import { fmtBytes, parseTime, timeAgo } from "../../ui/common";

/** worker.protocol.HEARTBEAT_TTL_S: a worker quiet for longer is not alive. */
export const HEARTBEAT_TTL_MS = 30_000;

export interface MachineDevice {
  device: number;
  label: string; // "GPU 3", "CPU 0"
  /** The device's GPU in the latest heartbeat; null for a CPU slot or a GPU the heartbeat does not list. */
  gpu: GpuTelemetry | null;
}

export interface MachineRow {
  node: number;
  workerId: string;
  host: string | null;
  /** Node 0: torchrun's c10d rendezvous runs on its host. */
  rendezvous: boolean;
  /** False when the worker has never reported, stopped, or its last heartbeat is older than the TTL. */
  alive: boolean;
  /** "4s ago", "no heartbeat for 2m", "no heartbeat". */
  heartbeat: string;
  kind: "gpu" | "cpu";
  devices: MachineDevice[];
  /** The machine's CPU % (what a CPU-slot agent shows instead of GPU telemetry). */
  cpuPercent: number | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;

/** Whether the run page shows its machines: placed, and queued (reserved, forming) or running. */
export function showMachines(run: Pick<RunPublic, "status" | "placement">): boolean {
  return (run.status === "running" || run.status === "queued") && (run.placement ?? []).length > 0;
}

/** One row per machine of the placement, node order, with what its worker's latest heartbeat says. */
export function machineRows(
  placement: RunPublic["placement"],
  workers: WorkerPublic[] | null,
  now: number,
): MachineRow[] {
  const byId = new Map((workers ?? []).map((w) => [w.id, w]));
  return (placement ?? []).map((p, node) => {
    const w = byId.get(p.worker_id);
    const t = w?.telemetry ?? {};
    const agent = isObject(t.agent) ? t.agent : null;
    const kind = agent?.device_kind === "cpu" ? "cpu" : "gpu";
    const gpus = Array.isArray(t.gpus) ? t.gpus : [];
    const seen = w ? parseTime(w.last_seen) : NaN;
    const alive = !!w && w.online && Number.isFinite(seen) && now - seen <= HEARTBEAT_TTL_MS;
    const heartbeat =
      !w || !Number.isFinite(seen)
        ? "no heartbeat"
        : alive
          ? timeAgo(w.last_seen, now)
          : `no heartbeat for ${timeAgo(w.last_seen, now).replace(/ ago$/, "")}`;
    return {
      node,
      workerId: p.worker_id,
      host: p.host ?? w?.host ?? null,
      rendezvous: node === 0,
      alive,
      heartbeat,
      kind,
      devices: p.devices.map((device) => ({
        device,
        label: `${kind === "cpu" ? "CPU" : "GPU"} ${device}`,
        // The heartbeat numbers its GPUs as NVML does, and so does an agent's --gpus.
        gpu: kind === "cpu" ? null : (gpus.find((g) => g.index === device) ?? null),
      })),
      cpuPercent: typeof t.cpu_percent === "number" ? t.cpu_percent : null,
    };
  });
}

/** "87%", or "—" when the heartbeat has no reading. */
export function fmtPercent(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? "—" : `${Math.round(v)}%`;
}

/** "12.0 GiB / 80.0 GiB", or "—" when the heartbeat has neither. */
export function fmtMemory(g: GpuTelemetry | null): string {
  if (!g || (g.memory_used == null && g.memory_total == null)) return "—";
  return `${fmtBytes(g.memory_used)} / ${fmtBytes(g.memory_total)}`;
}

/** "71 °C", or "—". */
export function fmtTemperature(g: GpuTelemetry | null): string {
  return g?.temperature == null ? "—" : `${g.temperature} °C`;
}
