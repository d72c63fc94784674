// An agent's devices (`mocolab worker --gpus ...`) as the Workers page shows them: one chip per device, free or
// held by a run (a link), or held by another team's run (no name). Read from the heartbeat's `agent` key
// (worker/gang.py), which the server scopes like the rest of the telemetry; a one-GPU worker has none.
export interface DeviceChip {
  device: number;
  label: string;
  state: "free" | "held" | "hidden";
  runId: string | null;
  attempt: number | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;

/** The chips of a heartbeat's agent, device order; null for a worker that is not an agent. */
export function deviceChips(telemetry: Record<string, unknown> | null | undefined): DeviceChip[] | null {
  const agent = telemetry?.agent;
  if (!isObject(agent) || !Array.isArray(agent.devices)) return null;
  const unit = agent.device_kind === "cpu" ? "CPU" : "GPU";
  const slots = new Map<number, Record<string, unknown>>();
  for (const s of Array.isArray(agent.slots) ? agent.slots : []) {
    if (isObject(s) && typeof s.device === "number") slots.set(s.device, s);
  }
  const devices = Array.from(new Set(agent.devices.filter((d): d is number => Number.isInteger(d)))).sort(
    (a, b) => a - b,
  );
  return devices.map((device) => {
    const slot = slots.get(device) ?? {};
    const runId = typeof slot.run_id === "string" && slot.run_id ? slot.run_id : null;
    const attempt = runId && typeof slot.attempt === "number" ? slot.attempt : null;
    const state = runId ? "held" : slot.hidden ? "hidden" : "free";
    return { device, label: `${unit} ${device}`, state, runId, attempt };
  });
}
