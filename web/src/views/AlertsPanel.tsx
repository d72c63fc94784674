// What fired, the evidence around the step, the suggested remedy and the last healthy checkpoint.
import { useEffect, useRef } from "preact/hooks";
import type { AlertPublic, CheckpointPublic } from "../api/types";
import { parseValue } from "../charts/series";
import { Empty, fmtNum, timeAgo } from "../ui/common";
import { alertExplain, alertLabel } from "./run/alertKinds";

function Sparkline({ points, at }: { points: [number, unknown][]; at: number | null }) {
  const pts = points.map(([s, v]) => [s, parseValue(v as number | string)] as [number, number]);
  const finite = pts.filter(([, v]) => Number.isFinite(v));
  if (pts.length < 2) return null;
  const W = 240,
    H = 48,
    pad = 3;
  const xs = pts.map(([s]) => s);
  const x0 = Math.min(...xs),
    x1 = Math.max(...xs);
  const vs = finite.map(([, v]) => v);
  const y0 = vs.length ? Math.min(...vs) : 0,
    y1 = vs.length ? Math.max(...vs) : 1;
  const X = (s: number) => pad + ((s - x0) / Math.max(1e-12, x1 - x0)) * (W - 2 * pad);
  const Y = (v: number) => H - pad - ((v - y0) / Math.max(1e-12, y1 - y0)) * (H - 2 * pad);
  const path = finite.map(([s, v], i) => `${i ? "L" : "M"}${X(s).toFixed(1)},${Y(v).toFixed(1)}`).join("");
  return (
    <svg
      class="spark"
      width={W}
      height={H}
      viewBox={`0 0 ${W} ${H}`}
      role="img"
      aria-label={`Values from step ${x0} to ${x1}; min ${fmtNum(y0)}, max ${fmtNum(y1)}`}
    >
      <path d={path} fill="none" stroke="currentColor" stroke-width="1.2" />
      {at !== null && at >= x0 && at <= x1 && (
        <line x1={X(at)} x2={X(at)} y1={0} y2={H} stroke="#e03131" stroke-dasharray="3 2" />
      )}
      {pts
        .filter(([, v]) => !Number.isFinite(v))
        .map(([s]) => (
          <path key={s} d={`M${X(s) - 4},1L${X(s) + 4},1L${X(s)},8Z`} fill="#e03131" />
        ))}
    </svg>
  );
}

/** Evidence entries that are (step, value) series: "recent", "recent_loss", ... */
function seriesEvidence(ev: Record<string, unknown>): [string, [number, unknown][]][] {
  return Object.entries(ev).filter(
    ([, v]) =>
      Array.isArray(v) &&
      v.length > 1 &&
      v.every((x) => Array.isArray(x) && x.length === 2 && typeof x[0] === "number"),
  ) as [string, [number, unknown][]][];
}

function scalarEvidence(ev: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  const series = new Set(seriesEvidence(ev).map(([k]) => k));
  for (const [k, v] of Object.entries(ev)) {
    if (series.has(k)) continue;
    if (v === null || v === undefined) continue;
    if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") out.push([k, fmtNum(v)]);
    else
      out.push([k, JSON.stringify(v, (_k, x) => (typeof x === "number" ? Number(x.toPrecision(4)) : x)).slice(0, 400)]);
  }
  return out;
}

export function AlertsPanel({
  alerts,
  checkpoints,
  focusStep = null,
}: {
  alerts: AlertPublic[];
  checkpoints: CheckpointPublic[];
  /** `?step=N`: the alert at that step is highlighted and scrolled into view. */
  focusStep?: number | null;
}) {
  const focused = useRef<HTMLLIElement>(null);
  const hasFocus = focusStep !== null && alerts.some((a) => a.step === focusStep);
  useEffect(() => {
    if (hasFocus) focused.current?.scrollIntoView({ block: "center" });
  }, [hasFocus, focusStep]);
  if (alerts.length === 0)
    return (
      <section aria-label="Alerts">
        <Empty>No alerts: the stability monitor has not seen a spike, a dip or a non-finite value.</Empty>
      </section>
    );
  return (
    <section aria-label="Alerts">
      <ol class="alerts" data-testid="alerts-panel">
        {[...alerts].reverse().map((a, i, all) => {
          const p = a.payload ?? {};
          const evidence = (p.evidence ?? {}) as Record<string, unknown>;
          const sparks = seriesEvidence(evidence);
          const healthyPath = typeof p.last_healthy_checkpoint === "string" ? p.last_healthy_checkpoint : null;
          const healthy = [...checkpoints].filter((c) => c.healthy && (a.step === null || c.step <= a.step)).pop();
          // the first (latest) alert at the focused step takes the ref
          const isFocus = focusStep !== null && a.step === focusStep;
          const firstFocus = isFocus && all.findIndex((x) => x.step === focusStep) === i;
          const explain = alertExplain(a.kind);
          return (
            <li
              key={a.seq}
              ref={firstFocus ? focused : undefined}
              class={`alert-item sev-${a.severity}${isFocus ? " focused" : ""}`}
              data-testid="alert-item"
              data-kind={a.kind}
              data-step={a.step ?? ""}
              data-focused={isFocus ? "1" : undefined}
            >
              <div class="alert-head">
                <span class={`badge sev sev-${a.severity}`}>{a.severity}</span>
                <b title={a.kind}>{alertLabel(a.kind)}</b>
                <span>
                  at step <b>{a.step ?? "?"}</b>
                </span>
                {a.metric && <span class="mono small">{a.metric}</span>}
                {p.value !== undefined && (
                  <span class="small">
                    value <b>{fmtNum(p.value)}</b>
                  </span>
                )}
                {p.baseline !== undefined && p.baseline !== null && (
                  <span class="small">baseline {fmtNum(p.baseline)}</span>
                )}
                <span class="spacer" />
                <span class="muted small">{timeAgo(a.time)}</span>
              </div>
              <p class="alert-msg">{a.message}</p>
              {explain && (
                <p class="muted small alert-explain" data-testid="alert-explain">
                  {explain}
                </p>
              )}
              <p class="remedy">
                <b>Suggested remedy:</b> {a.remedy || "—"}
              </p>
              <p class="small">
                <b>Last healthy checkpoint:</b>{" "}
                {healthyPath ? (
                  <span class="mono">{healthyPath}</span>
                ) : healthy ? (
                  <span class="mono">
                    step {healthy.step}: {healthy.path}
                  </span>
                ) : (
                  <span class="muted">none before this step</span>
                )}
              </p>
              {(sparks.length > 0 || scalarEvidence(evidence).length > 0) && (
                <details>
                  <summary>Evidence around step {a.step ?? "?"}</summary>
                  <div class="evidence">
                    {sparks.map(([k, pts]) => (
                      <div key={k}>
                        <Sparkline points={pts} at={a.step} />
                        <div class="muted small">
                          {k === "recent" ? (a.metric ?? "value") : k.replace(/^recent_/, "")}, steps {pts[0][0]}–
                          {pts[pts.length - 1][0]}
                        </div>
                      </div>
                    ))}
                    <dl>
                      {scalarEvidence(evidence).map(([k, v]) => (
                        <>
                          <dt key={`k-${k}`}>{k}</dt>
                          <dd key={`v-${k}`} class="mono small">
                            {v}
                          </dd>
                        </>
                      ))}
                    </dl>
                  </div>
                </details>
              )}
            </li>
          );
        })}
      </ol>
    </section>
  );
}
