// The workers and their GPUs, live from the team stream's heartbeats, each with its telemetry history
// charted (the API's last hour, extended by the live beats); offline ones greyed with the time they went quiet.
import { useRef } from "preact/hooks";
import type { GpuTelemetry, WorkerPublic } from "../api/types";
import { Empty, ErrorBox, Link, LiveIndicator, Loading, fmtBytes, parseTime, timeAgo } from "../ui/common";
import { useWorkerHistory } from "./workers/useWorkerHistory";
import { WorkerHistory } from "./workers/WorkerHistory";
import { deviceChips, type DeviceChip } from "./workers/devices";
import { useNow, useWorkers, type OnBeat } from "./workers/useWorkers";
import { HEARTBEAT_TTL_MS as TTL_MS } from "./run/machines";

function Meter({
  value,
  max,
  label,
  unit,
}: {
  value: number | null | undefined;
  max: number;
  label: string;
  unit: string;
}) {
  const pct = value === null || value === undefined ? null : Math.max(0, Math.min(100, (100 * value) / max));
  return (
    <div class="meter" title={`${label}: ${pct === null ? "n/a" : `${value}${unit}`}`}>
      <span class="meter-label">{label}</span>
      <span class="meter-bar">
        <span style={{ width: `${pct ?? 0}%` }} class={pct !== null && pct > 90 ? "hot" : ""} />
      </span>
      <span class="meter-val">{pct === null ? "—" : `${Math.round(value!)}${unit}`}</span>
    </div>
  );
}

function Gpu({ g }: { g: GpuTelemetry }) {
  const memPct = g.memory_used != null && g.memory_total ? (100 * g.memory_used) / g.memory_total : null;
  return (
    <div class="gpu" data-testid="gpu">
      <div>
        <b>GPU {g.index ?? ""}</b> <span class="muted small">{g.name ?? "unknown"}</span>
      </div>
      <Meter value={g.utilization} max={100} label="util" unit="%" />
      <Meter value={memPct} max={100} label="mem" unit="%" />
      <div class="muted small">
        {fmtBytes(g.memory_used)} / {fmtBytes(g.memory_total)} ·{" "}
        {g.temperature != null ? `${g.temperature} °C` : "temp n/a"}
      </div>
    </div>
  );
}

/** An agent's devices: each links to the run that holds it, or says it is free. */
function DeviceChips({ chips }: { chips: DeviceChip[] }) {
  return (
    <div class="device-chips" data-testid="device-chips">
      {chips.map((c) =>
        c.runId ? (
          <Link
            key={c.device}
            href={`/runs/${encodeURIComponent(c.runId)}`}
            class="tag device held"
            title={`${c.label}: run ${c.runId}${c.attempt ? `, attempt ${c.attempt}` : ""}`}
          >
            {c.label} · <span class="mono">{c.runId}</span>
          </Link>
        ) : (
          <span
            key={c.device}
            class={`tag device ${c.state}`}
            title={c.state === "hidden" ? `${c.label}: held by another team's run` : `${c.label}: free`}
          >
            {c.label} · {c.state === "hidden" ? "in use" : "free"}
          </span>
        ),
      )}
    </div>
  );
}

export function WorkersPage() {
  // Each live beat extends its worker's history; the history hook needs the list the workers hook loads.
  const beat = useRef<OnBeat>();
  const { workers, error, reload, retry, live } = useWorkers((id, lastSeen, t) => beat.current?.(id, lastSeen, t));
  const now = useNow();
  const [history, addBeat] = useWorkerHistory(
    (workers ?? []).map((w) => w.id),
    reload,
  );
  beat.current = addBeat;

  const isOnline = (w: WorkerPublic) => w.online && now - parseTime(w.last_seen) <= TTL_MS;
  const sorted = (workers ?? [])
    .slice()
    .sort((a, b) => Number(isOnline(b)) - Number(isOnline(a)) || a.id.localeCompare(b.id));

  return (
    <main class="page">
      <div class="page-head">
        <h1>Workers</h1>
        <LiveIndicator state={live} />
        <span class="muted small">
          {sorted.filter(isOnline).length} online of {sorted.length}
        </span>
      </div>
      {error ? (
        <ErrorBox error={error} retry={retry} />
      ) : workers === null ? (
        <Loading what="workers" />
      ) : sorted.length === 0 ? (
        <Empty>
          No worker has reported yet. Start one with <code>mocolab worker</code>.
        </Empty>
      ) : (
        <div class="worker-grid">
          {sorted.map((w) => {
            const online = isOnline(w);
            const t = w.telemetry ?? {};
            const gpus = Array.isArray(t.gpus) ? t.gpus : [];
            const chips = deviceChips(t);
            const memPct = t.memory_used != null && t.memory_total ? (100 * t.memory_used) / t.memory_total : null;
            return (
              <article
                key={w.id}
                class={`card worker${online ? "" : " offline"}`}
                data-testid="worker-card"
                data-online={online ? "1" : "0"}
                data-worker-id={w.id}
                aria-label={`Worker ${w.id}, ${online ? "online" : "offline"}`}
              >
                <header>
                  <span class={`dot ${online ? "on" : "off"}`} aria-hidden="true" />
                  <b class="mono">{w.id}</b>
                  <span class="spacer" />
                  <span class={`badge ${online ? "status-running" : "status-lost"}`}>
                    {online ? (w.state ?? "online") : "offline"}
                  </span>
                </header>
                <div class="muted small">
                  {w.host ?? "?"} · queue <b>{w.queue ?? "?"}</b>
                  {w.version ? ` · v${w.version}` : ""}
                </div>
                <div class="small">
                  {online ? (
                    <>
                      last heartbeat <span data-testid="worker-heartbeat">{timeAgo(w.last_seen, now)}</span>
                    </>
                  ) : (
                    <>
                      quiet since <b>{new Date(parseTime(w.last_seen)).toLocaleString()}</b> (
                      {timeAgo(w.last_seen, now)})
                    </>
                  )}
                </div>
                <div class="small">
                  {online && w.current_run_id ? (
                    <>
                      running{" "}
                      <Link href={`/runs/${encodeURIComponent(w.current_run_id)}`} class="mono">
                        {w.current_run_id}
                      </Link>
                    </>
                  ) : (
                    <span class="muted">idle</span>
                  )}
                </div>
                {chips && online && <DeviceChips chips={chips} />}
                <div class="host-meters">
                  <Meter value={t.cpu_percent} max={100} label="cpu" unit="%" />
                  <Meter value={memPct} max={100} label="ram" unit="%" />
                </div>
                {gpus.length === 0 ? (
                  <div class="no-gpu muted small" data-testid="no-gpu">
                    CPU only: no GPU on this worker{t.cpu_count ? ` (${t.cpu_count} CPU cores)` : ""}
                  </div>
                ) : (
                  gpus.map((g, i) => <Gpu key={i} g={g} />)
                )}
                <WorkerHistory workerId={w.id} samples={history[w.id]} />
              </article>
            );
          })}
        </div>
      )}
    </main>
  );
}
