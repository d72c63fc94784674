// The run page's head: name, status, live state and the actions (cancel, resume, clone, CSV), then the
// run's facts (ids, project, its GPUs, progress, accuracies); why a queued run waits, and where a placed run
// runs (machine -> devices, node order).
import type { LiveState } from "../../api/events";
import type { LineagePublic, RunDetail } from "../../api/types";
import { navigate } from "../../router";
import { Link, LiveIndicator, StatusBadge, fmtAcc, timeAgo } from "../../ui/common";
import { resourcesLabel } from "../newrun/resources";
import { knnEvalCell, knnProbeCell } from "../runs/knn";

export const TERMINAL = ["succeeded", "failed", "cancelled", "lost"];

export function RunHeader({
  run,
  live,
  busy,
  parent,
  canFork,
  onFork,
  onCancel,
  onResume,
}: {
  run: RunDetail;
  live: LiveState;
  busy: string | null;
  /** A fork's parent (from the lineage: its name), when known. */
  parent: LineagePublic["parent"];
  canFork: boolean;
  onFork: () => void;
  onCancel: () => void;
  onResume: () => void;
}) {
  const forkStep = parent?.step ?? run.parent_step ?? null;
  const isFork = run.kind === "pretrain" && !!run.parent_run_id && forkStep !== null;
  const id = run.id;
  const running = !TERMINAL.includes(run.status);
  const canResume = ["failed", "cancelled", "lost"].includes(run.status);
  const pct = run.total_steps && run.step !== null ? Math.min(100, (100 * run.step) / run.total_steps) : null;
  return (
    <>
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
            onClick={() => confirm("Cancel this run? It stops at its next step and keeps a checkpoint.") && onCancel()}
          >
            {run.cancel_requested ? "Cancelling…" : "Cancel"}
          </button>
        )}
        {canResume && (
          <button type="button" class="btn" disabled={busy !== null} data-testid="resume-button" onClick={onResume}>
            Resume
          </button>
        )}
        {canFork && (
          <button
            type="button"
            class="btn"
            data-testid="fork-button"
            title="Start a new run from one of this run's checkpoints, with changed settings"
            onClick={onFork}
          >
            Fork
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
        {isFork ? (
          <span data-testid="forked-from" data-parent={run.parent_run_id} data-step={forkStep}>
            forked from{" "}
            <Link href={`/runs/${encodeURIComponent(run.parent_run_id!)}?step=${forkStep}`}>
              {parent?.name || run.parent_run_id}
            </Link>{" "}
            at step <b>{forkStep}</b>
          </span>
        ) : (
          run.parent_run_id && (
            <span>
              of <Link href={`/runs/${encodeURIComponent(run.parent_run_id)}`}>{run.parent_run_id}</Link>
            </span>
          )
        )}
        {run.tags.map((t) => (
          <span key={t} class="tag">
            {t}
          </span>
        ))}
        <span title={run.created_at}>created {timeAgo(run.created_at)}</span>
        <span data-testid="run-resources">{resourcesLabel(run)}</span>
        {run.worker_id && !run.placement?.length && <span>on {run.worker_id}</span>}
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
      {run.status === "queued" && run.wait_reason && (
        <div class="muted small" data-testid="run-wait-reason">
          Queued: {run.wait_reason}
        </div>
      )}
    </>
  );
}
