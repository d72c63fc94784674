// The machines of a placed run, watched live: one row per machine (node order), its worker's last heartbeat
// (red when quiet past the server's TTL) and the telemetry of this run's devices on it, from the same live
// workers list as the Workers page.
import type { RunPublic } from "../../api/types";
import { Link } from "../../ui/common";
import { useNow, useWorkers } from "../workers/useWorkers";
import { fmtMemory, fmtPercent, fmtTemperature, machineRows, type MachineRow } from "./machines";

function Devices({ m }: { m: MachineRow }) {
  if (m.kind === "cpu") {
    return (
      <span>
        <span class="mono">{m.devices.map((d) => d.label).join(", ")}</span>
        <span class="muted"> · machine CPU </span>
        <b data-testid="machine-cpu">{fmtPercent(m.cpuPercent)}</b>
      </span>
    );
  }
  return (
    <div class="machine-devices">
      {m.devices.map((d) => (
        <div key={d.device} class="small" data-testid="machine-gpu">
          <b>{d.label}</b>
          {d.gpu?.name && <span class="muted"> {d.gpu.name}</span>}
          {d.gpu ? (
            <>
              {" "}
              · util <b>{fmtPercent(d.gpu.utilization)}</b> · mem {fmtMemory(d.gpu)} · {fmtTemperature(d.gpu)}
            </>
          ) : (
            <span class="muted"> · no reading</span>
          )}
        </div>
      ))}
    </div>
  );
}

export function MachinesPanel({ run }: { run: Pick<RunPublic, "placement"> }) {
  const { workers } = useWorkers();
  const now = useNow();
  const rows = machineRows(run.placement, workers, now);
  return (
    <section aria-label="Machines" class="machines" data-testid="run-machines">
      <div class="machines-head">
        <b>Machines</b>
        {workers === null && <span class="muted small">loading heartbeats…</span>}
      </div>
      <table class="simple">
        <thead>
          <tr>
            <th>node</th>
            <th>worker</th>
            <th>host</th>
            <th>last heartbeat</th>
            <th>this run's devices</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((m) => (
            <tr key={m.node} data-testid="machine-row" data-alive={m.alive ? "1" : "0"}>
              <td>
                {m.node}
                {m.rendezvous && (
                  <span class="muted small" title="torchrun's c10d rendezvous runs on this machine">
                    {" "}
                    (rendezvous)
                  </span>
                )}
              </td>
              <td>
                <Link href="/workers" class="mono">
                  {m.workerId}
                </Link>
              </td>
              <td class="mono">{m.host ?? "?"}</td>
              <td class={m.alive ? "" : "bad"} data-testid="machine-heartbeat">
                {workers === null ? "…" : m.heartbeat}
              </td>
              <td>
                <Devices m={m} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
