// One run: live status and charts, alerts, evaluations, config, logs and checkpoints.
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api/client";
import { LiveStream, runStreamUrl, type LiveState, type StreamMessage } from "../api/events";
import { useTeamStream } from "../api/team";
import type {
  AlertPublic,
  CheckpointPublic,
  EvalKind,
  EvalResultPublic,
  RunDetail,
  RunEvent,
  RunPublic,
} from "../api/types";
import { LineChart, type ChartLine, type Marker } from "../charts/LineChart";
import { DEFAULT_BUCKETS, useRunCharts, type GroupState } from "../charts/runCharts";
import { emptySeries, pointsOfPayload } from "../charts/series";
import { navigate } from "../router";
import { Empty, ErrorBox, Link, LiveIndicator, Loading, StatusBadge, fmtAcc, fmtNum, timeAgo } from "../ui/common";
import { AlertsPanel } from "./AlertsPanel";
import { knnEvalCell, knnProbeCell } from "./runs/knn";

const TERMINAL = ["succeeded", "failed", "cancelled", "lost"];
const LOG_TYPES = ["status", "log", "alert", "checkpoint", "eval_result", "config"];
const linesCache = new WeakMap<Map<string, unknown>, ChartLine[]>();

function linesOf(g: GroupState): ChartLine[] {
  let l = linesCache.get(g.series);
  if (!l || l.length !== g.group.keys.length) {
    l = g.group.keys.map((k) => ({ label: k, series: g.series.get(k) ?? emptySeries(k) }));
    linesCache.set(g.series, l);
  }
  return l;
}

type Tab = "charts" | "alerts" | "evals" | "config" | "logs" | "checkpoints";

export function RunPage({ id }: { id: string }) {
  const [run, setRun] = useState<RunDetail | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [alerts, setAlerts] = useState<AlertPublic[]>([]);
  const [evals, setEvals] = useState<EvalResultPublic[]>([]);
  const [children, setChildren] = useState<RunPublic[]>([]);
  const [checkpoints, setCheckpoints] = useState<CheckpointPublic[]>([]);
  const [logs, setLogs] = useState<RunEvent[] | null>(null);
  const [live, setLive] = useState<LiveState>("connecting");
  const [tab, setTab] = useState<Tab>(() => {
    const t = new URLSearchParams(window.location.search).get("tab");
    return (["charts", "alerts", "evals", "config", "logs", "checkpoints"].includes(t ?? "") ? t : "charts") as Tab;
  });
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [width, setWidth] = useState(DEFAULT_BUCKETS);
  const charts = useRunCharts(id, width);
  const pushRef = useRef(charts.push);
  pushRef.current = charts.push;
  const refreshTimer = useRef<Record<string, number>>({});

  const refresh = (what: "run" | "evals" | "checkpoints" | "alerts") => {
    // coalesce bursts of events into one request per kind
    if (refreshTimer.current[what]) return;
    refreshTimer.current[what] = window.setTimeout(() => {
      delete refreshTimer.current[what];
      if (what === "run")
        api
          .run(id)
          .then(setRun)
          .catch(() => {});
      if (what === "evals") {
        api
          .evals(id)
          .then(setEvals)
          .catch(() => {});
        api
          .runs({ parent_run_id: id, limit: 100 })
          .then((r) => setChildren(r.data))
          .catch(() => {});
      }
      if (what === "checkpoints")
        api
          .checkpoints(id)
          .then(setCheckpoints)
          .catch(() => {});
      if (what === "alerts")
        api
          .alerts(id)
          .then(setAlerts)
          .catch(() => {});
    }, 250);
  };

  useEffect(() => {
    const ctrl = new AbortController();
    let stream: LiveStream | null = null;
    api
      .run(id, ctrl.signal)
      .then((r) => {
        setRun(r);
        // Everything up to last_seq comes over REST; the stream brings what follows.
        stream = new LiveStream({
          url: runStreamUrl(id),
          mode: "seq",
          afterSeq: r.last_seq,
          onState: setLive,
          onMessage: (m: StreamMessage) => onRunEvent(m),
        }).start();
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    api
      .alerts(id, ctrl.signal)
      .then(setAlerts)
      .catch(() => {});
    api
      .evals(id, ctrl.signal)
      .then(setEvals)
      .catch(() => {});
    api
      .checkpoints(id, ctrl.signal)
      .then(setCheckpoints)
      .catch(() => {});
    api
      .runs({ parent_run_id: id, limit: 100 }, ctrl.signal)
      .then((r) => setChildren(r.data))
      .catch(() => {});
    return () => {
      ctrl.abort();
      stream?.close();
      Object.values(refreshTimer.current).forEach((t) => clearTimeout(t));
    };
  }, [id]);

  const onRunEvent = (m: StreamMessage) => {
    const e = m.data as RunEvent;
    if (!e || typeof e !== "object") return;
    if (m.event === "metrics") {
      pushRef.current(pointsOfPayload(e.payload ?? {}));
      const step = e.payload?.step;
      if (typeof step === "number")
        setRun((cur) => (cur && (cur.step ?? -1) < step + 1 ? { ...cur, step: step + 1 } : cur));
      return;
    }
    if (e.seq !== undefined && LOG_TYPES.includes(m.event)) setLogs((cur) => (cur ? [...cur, e] : cur));
    if (m.event === "status" || e.seq === undefined) refresh("run");
    if (m.event === "alert") refresh("alerts");
    if (m.event === "checkpoint") refresh("checkpoints");
    if (m.event === "eval_result") refresh("evals");
  };

  // Status changes of this run and its evaluation runs arrive on the team stream.
  const onTeam = useCallback(
    (m: StreamMessage) => {
      if (m.event !== "run") return;
      const r = m.data as RunPublic;
      if (r.id === id) {
        setRun((cur) => (cur ? { ...cur, ...r } : cur));
      } else if (r.parent_run_id === id) {
        setChildren((cur) => {
          const i = cur.findIndex((c) => c.id === r.id);
          return i < 0 ? [r, ...cur] : cur.map((c) => (c.id === r.id ? { ...c, ...r } : c));
        });
        refresh("evals");
      }
    },
    [id],
  );
  useTeamStream(onTeam);

  useEffect(() => {
    if (tab !== "logs" || logs !== null) return;
    api
      .events(id, -1, 1000, LOG_TYPES)
      .then((r) => setLogs(r.data))
      .catch((e) =>
        setLogs([
          {
            run_id: id,
            seq: -1,
            time: Date.now() / 1000,
            type: "error",
            payload: { message: `could not load the log: ${(e as Error).message}` },
          },
        ]),
      );
  }, [tab, id]);

  const act = async (name: string, fn: () => Promise<RunDetail>, after?: (r: RunDetail) => void) => {
    setBusy(name);
    setActionError(null);
    try {
      const r = await fn();
      after?.(r);
    } catch (e) {
      setActionError(e instanceof ApiError ? e.message : String(e));
    }
    setBusy(null);
  };

  const evaluate = (kind: EvalKind) =>
    act(
      `eval-${kind}`,
      () => api.evaluate(id, kind),
      (child) => {
        setChildren((cur) => [child, ...cur.filter((c) => c.id !== child.id)]);
      },
    );

  const markers: Marker[] = useMemo(
    () => alerts.filter((a) => a.step !== null).map((a) => ({ step: a.step!, label: a.kind })),
    [alerts],
  );

  if (error) {
    return (
      <main class="page">
        <ErrorBox
          error={
            error instanceof ApiError && error.status === 404
              ? "This run does not exist or is not visible to you."
              : error
          }
        />
        <p>
          <Link href="/">Back to the runs</Link>
        </p>
      </main>
    );
  }
  if (!run)
    return (
      <main class="page">
        <Loading what="run" />
      </main>
    );

  const running = !TERMINAL.includes(run.status);
  const canResume = ["failed", "cancelled", "lost"].includes(run.status);
  const isPretrain = run.kind === "pretrain";
  const pct = run.total_steps && run.step !== null ? Math.min(100, (100 * run.step) / run.total_steps) : null;
  const tabs: [Tab, string][] = [
    ["charts", "Charts"],
    ["alerts", `Alerts (${alerts.length})`],
    ["evals", `Evaluations (${evals.length + children.filter((c) => !evals.some((e) => e.run_id === c.id)).length})`],
    ["config", "Config"],
    ["logs", "Logs"],
    ["checkpoints", `Checkpoints (${checkpoints.length})`],
  ];

  return (
    <main class="page run-page">
      <div class="page-head">
        <h1 class="run-title">{run.name || run.id}</h1>
        <StatusBadge status={run.status} />
        <LiveIndicator state={live} />
        <span class="spacer" />
        {running && (
          <button
            type="button"
            class="btn danger"
            disabled={busy !== null || run.cancel_requested}
            data-testid="cancel-button"
            onClick={() =>
              confirm("Cancel this run? It stops at its next step and keeps a checkpoint.") &&
              act("cancel", () => api.cancel(id), setRun)
            }
          >
            {run.cancel_requested ? "Cancelling…" : "Cancel"}
          </button>
        )}
        {canResume && (
          <button
            type="button"
            class="btn"
            disabled={busy !== null}
            data-testid="resume-button"
            onClick={() => act("resume", () => api.resume(id), setRun)}
          >
            Resume
          </button>
        )}
        <button
          type="button"
          class="btn"
          data-testid="clone-button"
          onClick={() => navigate(`/new?clone=${encodeURIComponent(id)}`)}
        >
          Clone and edit
        </button>
        <a class="btn ghost" href={`/api/v1/runs/${encodeURIComponent(id)}/export.csv`} download>
          CSV
        </a>
      </div>
      <div class="run-meta">
        <span class="mono">{run.id}</span>
        <span>{run.kind}</span>
        <span>
          project <b>{run.project}</b>
        </span>
        <span>by {run.owner}</span>
        {run.parent_run_id && (
          <span>
            of <Link href={`/runs/${encodeURIComponent(run.parent_run_id)}`}>{run.parent_run_id}</Link>
          </span>
        )}
        {run.tags.map((t) => (
          <span key={t} class="tag">
            {t}
          </span>
        ))}
        <span title={run.created_at}>created {timeAgo(run.created_at)}</span>
        {run.worker_id && <span>on {run.worker_id}</span>}
        {run.attempt > 1 && <span>attempt {run.attempt}</span>}
        {pct !== null && (
          <span class="progress wide" title={`${run.step}/${run.total_steps}`} data-testid="run-progress">
            <span class="bar" style={{ width: `${pct}%` }} />
            <span>
              step {run.step}/{run.total_steps}
            </span>
          </span>
        )}
        <span title={knnProbeCell(run).title} data-testid="run-knn-probe">
          kNN probe <b>{knnProbeCell(run).text}</b>
        </span>
        <span title={knnEvalCell(run).title} data-testid="run-knn-eval">
          kNN eval <b>{knnEvalCell(run).text}</b>
        </span>
        <span>
          linear <b>{fmtAcc(run.best_linear_top1)}</b>
        </span>
        {run.best_finetune_top1 !== null && (
          <span>
            fine-tune <b>{fmtAcc(run.best_finetune_top1)}</b>
          </span>
        )}
      </div>
      {run.error && (
        <div class="state error" role="alert" data-testid="run-error">
          <b>Error:</b> {run.error}
        </div>
      )}
      {run.message && !run.error && <div class="notice">{run.message}</div>}
      {actionError && (
        <div class="state error" role="alert" data-testid="action-error">
          {actionError}
        </div>
      )}
      {alerts.length > 0 && tab !== "alerts" && (
        <div class="alert-strip" role="status">
          ⚠ {alerts.length} alert{alerts.length > 1 ? "s" : ""}: latest <b>{alerts[alerts.length - 1].kind}</b> at step{" "}
          {alerts[alerts.length - 1].step ?? "?"} —
          <button type="button" class="linklike" onClick={() => setTab("alerts")}>
            see what fired and what to do
          </button>
        </div>
      )}
      <div class="tabs" role="tablist">
        {tabs.map(([t, label]) => (
          <button
            type="button"
            role="tab"
            key={t}
            aria-selected={tab === t}
            class={tab === t ? "active" : ""}
            data-testid={`tab-${t}`}
            onClick={() => setTab(t)}
          >
            {label}
          </button>
        ))}
      </div>
      {tab === "charts" && (
        <section aria-label="Charts">
          {charts.error ? (
            <ErrorBox error={charts.error} />
          ) : !charts.ready && !charts.groups.length ? (
            <Loading what="metrics" />
          ) : charts.groups.length === 0 ? (
            <Empty>
              {running
                ? "No metrics yet: the charts appear with the first logged step."
                : "This run logged no metrics."}
            </Empty>
          ) : (
            <div class="chart-grid">
              {charts.groups.map((g) => (
                <div key={g.group.id}>
                  <LineChart
                    id={g.group.id}
                    title={g.group.title}
                    lines={linesOf(g)}
                    yRange={g.group.yRange}
                    markers={markers}
                    zoomed={g.zoom !== null}
                    loading={g.fetching}
                    syncKey={`run-${id}`}
                    onZoom={(lo, hi) => charts.zoom(g.group.id, lo, hi)}
                    onResetZoom={() => charts.resetZoom(g.group.id)}
                    onWidth={(w) => setWidth((cur) => (Math.abs(cur - Math.round(w)) > 50 ? Math.round(w) : cur))}
                  />
                  {g.error && <div class="state error small">{g.error}</div>}
                </div>
              ))}
            </div>
          )}
          <p class="muted small">
            Drag across a chart to zoom into those steps (refetched at full detail); shaded bands are each bucket's
            min–max, so spikes stay visible. Red dashed lines are alerts; red triangles mark non-finite values.
          </p>
        </section>
      )}
      {tab === "alerts" && <AlertsPanel alerts={alerts} checkpoints={checkpoints} />}
      {tab === "evals" && (
        <EvalsPanel
          run={run}
          evals={evals}
          children={children}
          busy={busy}
          onEvaluate={evaluate}
          isPretrain={isPretrain}
          hasCheckpoint={checkpoints.length > 0 || !!run.checkpoint}
        />
      )}
      {tab === "config" && (
        <section aria-label="Config">
          <pre class="config" data-testid="run-config">
            {JSON.stringify(run.spec, null, 2)}
          </pre>
        </section>
      )}
      {tab === "logs" && <LogsPanel logs={logs} />}
      {tab === "checkpoints" && (
        <section aria-label="Checkpoints">
          {checkpoints.length === 0 ? (
            <Empty>No checkpoints yet.</Empty>
          ) : (
            <table class="simple" data-testid="checkpoints-table">
              <thead>
                <tr>
                  <th>Step</th>
                  <th>Healthy</th>
                  <th>Path</th>
                  <th>Saved</th>
                </tr>
              </thead>
              <tbody>
                {checkpoints.map((c) => (
                  <tr key={c.step} data-testid="checkpoint-row">
                    <td class="num">{c.step}</td>
                    <td>{c.healthy ? "yes" : <span class="bad">no</span>}</td>
                    <td class="mono small">{c.path}</td>
                    <td class="small">{timeAgo(c.time)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      )}
    </main>
  );
}

function EvalsPanel(p: {
  run: RunDetail;
  evals: EvalResultPublic[];
  children: RunPublic[];
  busy: string | null;
  isPretrain: boolean;
  hasCheckpoint: boolean;
  onEvaluate: (k: EvalKind) => void;
}) {
  const byRun = new Map<string, EvalResultPublic[]>();
  for (const e of p.evals) byRun.set(e.run_id, [...(byRun.get(e.run_id) ?? []), e]);
  return (
    <section aria-label="Evaluations">
      {p.isPretrain && (
        <div class="eval-actions">
          <span>Evaluate the latest checkpoint:</span>
          {(["knn", "linear", "finetune"] as EvalKind[]).map((k) => (
            <button
              type="button"
              key={k}
              class="btn"
              data-testid={`eval-${k}`}
              disabled={p.busy !== null || !p.hasCheckpoint}
              title={p.hasCheckpoint ? undefined : "No checkpoint yet"}
              onClick={() => p.onEvaluate(k)}
            >
              {k === "knn" ? "kNN" : k === "linear" ? "Linear probe" : "Fine-tune"}
            </button>
          ))}
        </div>
      )}
      {p.evals.length === 0 && p.children.length === 0 ? (
        <Empty>No evaluations yet.</Empty>
      ) : (
        <table class="simple" data-testid="evals-table">
          <thead>
            <tr>
              <th>Protocol</th>
              <th>Run</th>
              <th>Status</th>
              <th>Top-1 (%)</th>
              <th>Top-5 (%)</th>
              <th>When</th>
            </tr>
          </thead>
          <tbody>
            {p.evals.map((e) => (
              <tr
                key={`${e.run_id}:${e.seq}`}
                data-testid="eval-row"
                data-protocol={e.protocol}
                data-top1={e.top1 ?? ""}
              >
                <td>{e.protocol}</td>
                <td class="mono small">
                  {e.run_id === p.run.id ? (
                    "this run"
                  ) : (
                    <Link href={`/runs/${encodeURIComponent(e.run_id)}`}>{e.run_id}</Link>
                  )}
                </td>
                <td>{p.children.find((c) => c.id === e.run_id)?.status ?? "—"}</td>
                <td class="num" data-testid="eval-top1">
                  <b>{fmtAcc(e.top1)}</b>
                </td>
                <td class="num">{fmtAcc(e.top5)}</td>
                <td class="small">{timeAgo(e.time)}</td>
              </tr>
            ))}
            {p.children
              .filter((c) => !byRun.has(c.id))
              .map((c) => (
                <tr key={c.id} data-testid="eval-pending-row" data-run-id={c.id}>
                  <td>{c.kind}</td>
                  <td class="mono small">
                    <Link href={`/runs/${encodeURIComponent(c.id)}`}>{c.id}</Link>
                  </td>
                  <td>
                    <StatusBadge status={c.status} />
                  </td>
                  <td class="num muted">{c.status === "succeeded" ? "—" : "pending"}</td>
                  <td />
                  <td class="small">{timeAgo(c.created_at)}</td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function LogsPanel({ logs }: { logs: RunEvent[] | null }) {
  if (logs === null) return <Loading what="log" />;
  if (logs.length === 0) return <Empty>No events yet.</Empty>;
  return (
    <section aria-label="Log">
      <ol class="log" data-testid="run-log">
        {logs.map((e) => (
          <li key={e.seq} class={`log-${e.type}`}>
            <span class="muted mono">{new Date(e.time * 1000).toLocaleTimeString()}</span>
            <span class="log-type">{e.type}</span>
            <span>{describeEvent(e)}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}

function describeEvent(e: RunEvent): string {
  const p = e.payload;
  if (typeof p.message === "string" && p.message) return (p.state ? `[${p.state}] ` : "") + p.message;
  if (e.type === "status")
    return `${p.state ?? ""}${p.step !== undefined ? ` at step ${p.step}` : ""}${p.total_steps ? ` of ${p.total_steps}` : ""}`;
  if (e.type === "checkpoint") return `step ${p.step}: ${p.path}${p.healthy === false ? " (not healthy)" : ""}`;
  if (e.type === "eval_result")
    return `${p.protocol}: top-1 ${fmtNum(p.top1)}${p.top5 !== undefined ? `, top-5 ${fmtNum(p.top5)}` : ""}`;
  if (e.type === "config") return "resolved config";
  return JSON.stringify(p).slice(0, 300);
}
