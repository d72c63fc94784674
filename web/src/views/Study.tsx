// A study's page: the table the paper would print (a row per value, or a grid for two axes), each row's
// accuracies per evaluation, its stability alerts, a sparkline of its kNN monitor, its run's status, and
// the paper's number beside ours; below, the runs' curves overlaid. Kept current from the team stream:
// a change to one of its runs refetches the study (debounced), never point by point.
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, exportUrl } from "../api/client";
import type { StreamMessage } from "../api/events";
import { useTeamStream } from "../api/team";
import type { StudyDetail, StudyRow, WireValue } from "../api/types";
import { OverlayCharts, runColor } from "../charts/Overlay";
import { bestOf, gridOf, runsToCancel, sparkPath } from "../studies/logic";
import { ErrorBox, Link, LiveIndicator, Loading, StatusBadge, fmtAcc, timeAgo } from "../ui/common";
import { ProgressBar, studyOf } from "./Studies";

const EVAL_NAMES: Record<string, string> = { knn: "kNN", linear: "Linear", finetune: "Fine-tune" };
const CURVES = ["loss", "knn_top1", "grad_norm/patch_proj", "grad_norm/last_block"];

export function Sparkline({
  points,
  width = 96,
  height = 24,
}: {
  points: [number, WireValue][];
  width?: number;
  height?: number;
}) {
  const d = sparkPath(points, width, height);
  const last = [...points].reverse().find(([, v]) => typeof v === "number");
  const title = points.length
    ? `kNN top-1 over ${points.length} checks${last ? `, last ${fmtAcc(last[1] as number)} at step ${last[0]}` : ""}`
    : "no kNN check yet";
  return (
    <svg
      class="sparkline"
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={title}
      data-testid="study-sparkline"
      data-points={points.length}
    >
      <title>{title}</title>
      {d ? (
        <path d={d} fill="none" stroke="currentColor" stroke-width="1.5" />
      ) : (
        <line x1="0" x2={width} y1={height / 2} y2={height / 2} class="none" />
      )}
    </svg>
  );
}

export function AlertCount({ n, runId }: { n: number | undefined; runId?: string }) {
  const count = n ?? 0;
  const body = (
    <span
      class={`badge ${count > 0 ? "alert" : "quiet"}`}
      data-testid="study-alerts"
      data-count={count}
      title={count > 0 ? `${count} stability alert${count > 1 ? "s" : ""}` : "no stability alerts"}
    >
      {count > 0 ? `⚠ ${count}` : "0"}
    </span>
  );
  return runId && count > 0 ? <Link href={`/runs/${encodeURIComponent(runId)}?tab=alerts`}>{body}</Link> : body;
}

function EvalValue({ row, kind, best }: { row: StudyRow; kind: string; best: number | null }) {
  const cell = row.evals[kind];
  if (!cell) {
    const st = row.run?.status;
    return (
      <span class="muted small" title="queued when the pretraining succeeds">
        {st === "failed" || st === "cancelled" || st === "lost" ? "—" : "pending"}
      </span>
    );
  }
  if (cell.top1 === null)
    return (
      <Link href={`/runs/${encodeURIComponent(cell.run_id)}`}>
        <StatusBadge status={cell.status} />
      </Link>
    );
  return (
    <Link
      href={`/runs/${encodeURIComponent(cell.run_id)}`}
      data-testid="study-eval"
      data-protocol={kind}
      data-top1={cell.top1}
    >
      {cell.top1 === best ? <b>{fmtAcc(cell.top1)}</b> : fmtAcc(cell.top1)}
    </Link>
  );
}

function RunState({ row }: { row: StudyRow }) {
  const r = row.run;
  if (!r) return <span class="muted">—</span>;
  const pct = r.total_steps && r.step !== null ? Math.min(100, (100 * r.step) / r.total_steps) : null;
  return (
    <span class="run-state">
      <Link href={`/runs/${encodeURIComponent(r.id)}`}>
        <StatusBadge status={r.status} />
      </Link>
      {r.status === "running" && pct !== null && (
        <span class="progress" title={`${r.step}/${r.total_steps}`}>
          <span class="bar" style={{ width: `${pct}%` }} />
          <span>
            {r.step}/{r.total_steps}
          </span>
        </span>
      )}
    </span>
  );
}

const rowKey = (r: StudyRow) => r.labels.join(" | ");

function StudyTable({ study }: { study: StudyDetail }) {
  const best = Object.fromEntries(study.evaluations.map((k) => [k, bestOf(study.rows.map((r) => r.evals[k]?.top1))]));
  const bestKnn = bestOf(study.rows.map((r) => r.run?.best_knn_top1));
  return (
    <div class="table-wrap">
      <table class="runs study-table" data-testid="study-table">
        <thead>
          <tr>
            <th scope="col" aria-label="curve colour" />
            {study.axes.map((a) => (
              <th scope="col" key={a.name}>
                {a.name}
              </th>
            ))}
            {study.evaluations.map((k) => (
              <th scope="col" key={k} class="num" title="top-1 (%) on our data">
                {EVAL_NAMES[k] ?? k} top-1
              </th>
            ))}
            {study.paper && (
              <th scope="col" class="num paper-col" title={`${study.paper.source}: ${study.paper.setting} (ImageNet)`}>
                Paper ({study.paper.protocol})
              </th>
            )}
            <th
              scope="col"
              class="num"
              title="the run's best kNN top-1 (the monitor during pretraining, and kNN evaluations)"
            >
              Best kNN
            </th>
            <th scope="col">kNN curve</th>
            <th scope="col">Alerts</th>
            <th scope="col">Run</th>
          </tr>
        </thead>
        <tbody>
          {study.rows.map((row, i) => (
            <tr key={rowKey(row)} data-testid="study-row" data-labels={rowKey(row)} data-run-id={row.run?.id ?? ""}>
              <td>
                <span class="swatch" style={{ background: runColor(i) }} />
              </td>
              {study.axes.map((a, k) => (
                <th scope="row" key={a.name} class="label">
                  {row.labels[k]}
                </th>
              ))}
              {study.evaluations.map((k) => (
                <td key={k} class="num">
                  <EvalValue row={row} kind={k} best={best[k]} />
                </td>
              ))}
              {study.paper && (
                <td class="num paper-col" data-testid="study-paper" data-value={row.paper ?? ""}>
                  {row.paper != null ? row.paper.toFixed(1) : "—"}
                </td>
              )}
              <td class="num">
                {row.run?.best_knn_top1 != null && row.run.best_knn_top1 === bestKnn ? (
                  <b>{fmtAcc(row.run.best_knn_top1)}</b>
                ) : (
                  fmtAcc(row.run?.best_knn_top1)
                )}
              </td>
              <td>
                <Sparkline points={row.knn_curve} />
              </td>
              <td>
                <AlertCount n={row.run?.alert_count} runId={row.run?.id} />
              </td>
              <td>
                <RunState row={row} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

type Metric = { id: string; label: string; value: (r: StudyRow) => number | null | undefined };

function StudyGrid({ study }: { study: StudyDetail }) {
  const metrics: Metric[] = [
    ...study.evaluations.map((k) => ({
      id: k,
      label: `${EVAL_NAMES[k] ?? k} top-1`,
      value: (r: StudyRow) => r.evals[k]?.top1,
    })),
    { id: "monitor", label: "kNN monitor (best)", value: (r: StudyRow) => r.run?.best_knn_top1 },
  ];
  const [metric, setMetric] = useState(metrics[0].id);
  const m = metrics.find((x) => x.id === metric) ?? metrics[0];
  const grid = gridOf(study.rows, study.axes);
  const best = bestOf(study.rows.map(m.value));
  return (
    <div>
      <label class="inline-label">
        Show
        <select
          value={m.id}
          data-testid="study-grid-metric"
          onChange={(e) => setMetric((e.target as HTMLSelectElement).value)}
        >
          {metrics.map((x) => (
            <option key={x.id} value={x.id}>
              {x.label}
            </option>
          ))}
        </select>
      </label>
      <div class="table-wrap">
        <table class="simple study-grid" data-testid="study-grid">
          <thead>
            <tr>
              <th scope="col">
                {study.axes[0].name} \ {study.axes[1].name}
              </th>
              {grid.cols.map((c) => (
                <th scope="col" key={c}>
                  {c}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {grid.rows.map((r, i) => (
              <tr key={r}>
                <th scope="row">{r}</th>
                {grid.cells[i].map((cell, j) => {
                  if (!cell)
                    return (
                      <td key={j} class="muted">
                        —
                      </td>
                    );
                  const v = m.value(cell);
                  return (
                    <td key={j} class="grid-cell" data-testid="study-grid-cell" data-labels={rowKey(cell)}>
                      <div class="grid-main">
                        {v != null ? (
                          v === best ? (
                            <b>{fmtAcc(v)}</b>
                          ) : (
                            fmtAcc(v)
                          )
                        ) : (
                          <StatusBadge
                            status={(m.id !== "monitor" && cell.evals[m.id]?.status) || cell.run?.status || "queued"}
                          />
                        )}
                      </div>
                      <div class="grid-sub">
                        <AlertCount n={cell.run?.alert_count} runId={cell.run?.id} />
                        {study.paper && cell.paper != null && (
                          <span class="muted small" title="the paper's number">
                            paper {cell.paper.toFixed(1)}
                          </span>
                        )}
                        <Sparkline points={cell.knn_curve} width={64} height={18} />
                      </div>
                    </td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

export function StudyPage({ id }: { id: string }) {
  const [study, setStudy] = useState<StudyDetail | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);
  const [view, setView] = useState<"table" | "grid">("table");
  const [curvesReload, setCurvesReload] = useState(0);
  const [cancelling, setCancelling] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const timer = useRef<number | null>(null);
  const runIds = useRef(new Set<string>());
  const statuses = useRef("");
  const curvesAt = useRef(Date.now());

  useEffect(() => {
    const ctrl = new AbortController();
    api
      .study(id, ctrl.signal)
      .then((s) => {
        setStudy(s);
        setError(null);
        runIds.current = new Set(
          s.rows
            .flatMap((r) => [r.run?.id, ...Object.values(r.evals).map((e) => e.run_id)])
            .filter(Boolean) as string[],
        );
        // Curves are refetched when a run starts or ends, and at most every 20 s while one runs; not per change.
        const sig = s.rows.map((r) => r.run?.status ?? "").join(",");
        const running = s.rows.some((r) => r.run?.status === "running");
        if ((statuses.current && sig !== statuses.current) || (running && Date.now() - curvesAt.current > 20_000)) {
          curvesAt.current = Date.now();
          setCurvesReload((n) => n + 1);
        }
        statuses.current = sig;
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctrl.abort();
  }, [id, reload]);

  const onMessage = useCallback(
    (m: StreamMessage) => {
      const which = studyOf(m, runIds.current);
      if (which !== true && which !== id) return;
      if (timer.current !== null) return;
      timer.current = window.setTimeout(() => {
        timer.current = null;
        setReload((n) => n + 1);
      }, 1000);
    },
    [id],
  );
  useEffect(
    () => () => {
      if (timer.current !== null) clearTimeout(timer.current);
    },
    [],
  );
  const live = useTeamStream(onMessage);

  const overlay = useMemo(
    () =>
      (study?.rows ?? []).flatMap((r, i) => (r.run ? [{ id: r.run.id, label: rowKey(r), color: runColor(i) }] : [])),
    [study?.rows.map((r) => r.run?.id).join(",")],
  );

  const cancel = async () => {
    if (!study) return;
    const n = runsToCancel(study);
    if (
      !confirm(
        `Cancel this study? Its runs not ended (${n}) are cancelled: a running one stops at its next step and keeps a checkpoint. No evaluation is queued after.`,
      )
    )
      return;
    setCancelling(true);
    setActionError(null);
    try {
      setStudy(await api.cancelStudy(study.id));
    } catch (e) {
      setActionError(e instanceof ApiError ? e.message : String(e));
    }
    setCancelling(false);
  };

  if (error && !study)
    return (
      <main class="page">
        <ErrorBox error={error} retry={() => setReload((n) => n + 1)} />
      </main>
    );
  if (!study)
    return (
      <main class="page">
        <Loading what="study" />
      </main>
    );
  const twoAxes = study.axes.length === 2;
  return (
    <main class="page study">
      <div class="page-head">
        <h1>{study.name}</h1>
        {study.title && (
          <span class="badge status-queued" title={study.template ?? ""}>
            {study.title}
          </span>
        )}
        {study.status === "cancelled" && (
          <span
            class="badge status-cancelled"
            data-testid="study-status"
            data-status={study.status}
            title={study.cancelled_at ?? ""}
          >
            cancelled
          </span>
        )}
        <LiveIndicator state={live} />
        <span class="spacer" />
        {study.status === "active" && (
          <button
            type="button"
            class="btn small danger"
            disabled={cancelling}
            data-testid="study-cancel"
            onClick={cancel}
          >
            {cancelling ? "Cancelling…" : "Cancel study"}
          </button>
        )}
        <a
          class="btn small"
          href={exportUrl.studyMarkdown(study.id)}
          target="_blank"
          rel="noopener"
          data-testid="study-export-md"
        >
          Markdown table
        </a>
        <Link href={`/compare?ids=${overlay.map((r) => encodeURIComponent(r.id)).join(",")}`} class="btn small">
          Compare runs
        </Link>
      </div>
      <div class="run-meta">
        <span>
          varies <b>{study.axes.map((a) => a.name).join(" × ")}</b>
        </span>
        <span>
          base <b>{study.preset ?? "defaults"}</b>
          {Object.keys(study.overrides).length ? (
            <>
              {" "}
              +{" "}
              <code>
                {Object.entries(study.overrides)
                  .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
                  .join(" ")}
              </code>
            </>
          ) : null}
        </span>
        <ProgressBar progress={study.progress} total={study.runs} />
        <span>
          evaluations{" "}
          <b>
            {study.evals_done}/{study.evals_total}
          </b>{" "}
          ({study.evaluations.map((k) => EVAL_NAMES[k] ?? k).join(", ")})
        </span>
        <span>
          {study.owner} · {study.project} · <span title={study.created_at}>{timeAgo(study.created_at)}</span>
        </span>
      </div>
      {actionError && (
        <div class="state error" role="alert" data-testid="action-error">
          {actionError}
        </div>
      )}
      {error ? <ErrorBox error={error} retry={() => setReload((n) => n + 1)} /> : null}
      {study.notes && <p class="muted">{study.notes}</p>}
      {twoAxes && (
        <div class="tabs" role="tablist">
          <button
            type="button"
            role="tab"
            aria-selected={view === "table"}
            class={view === "table" ? "active" : ""}
            data-testid="study-view-table"
            onClick={() => setView("table")}
          >
            Table
          </button>
          <button
            type="button"
            role="tab"
            aria-selected={view === "grid"}
            class={view === "grid" ? "active" : ""}
            data-testid="study-view-grid"
            onClick={() => setView("grid")}
          >
            Grid
          </button>
        </div>
      )}
      {twoAxes && view === "grid" ? <StudyGrid study={study} /> : <StudyTable study={study} />}
      {study.paper && (
        <p class="small muted paper-caption" data-testid="study-paper-caption">
          Paper: {study.paper.source}, {study.paper.protocol} top-1 on ImageNet, {study.paper.setting}. Ours are on our
          data ({study.rows.find((r) => r.run?.dataset)?.run?.dataset ?? study.preset ?? "this study's dataset"}), at a
          much smaller scale: compare the ordering, not the numbers.
          {study.paper.notes ? ` ${study.paper.notes}` : ""}
        </p>
      )}
      <div class="page-head">
        <h2>Curves</h2>
        <button type="button" class="btn small ghost" onClick={() => setCurvesReload((n) => n + 1)}>
          Refresh curves
        </button>
      </div>
      {overlay.length ? (
        <OverlayCharts runs={overlay} only={CURVES} reload={curvesReload} syncKey={`study-${study.id}`} />
      ) : (
        <p class="muted">No runs.</p>
      )}
    </main>
  );
}
