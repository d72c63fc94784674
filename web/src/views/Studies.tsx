// The team's studies: each one's template, its runs' progress by status and its evaluations done, kept
// current from the team stream (a study's runs are tagged study:<id>; a change refetches the list, debounced).
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api/client";
import type { StreamMessage } from "../api/events";
import { useTeamStream } from "../api/team";
import type { RunPublic, StudyPublic } from "../api/types";
import { progressSegments } from "../studies/logic";
import { Empty, ErrorBox, Link, LiveIndicator, Loading, timeAgo } from "../ui/common";

const PAGE = 50;

export function ProgressBar({ progress, total }: { progress: Record<string, number>; total: number }) {
  const segs = progressSegments(progress);
  const text = segs.map((s) => `${s.n} ${s.status}`).join(", ") || "no runs";
  return (
    <div class="study-progress" title={text} aria-label={`Runs: ${text}`} data-testid="study-progress">
      <div class="segments">
        {segs.map((s) => (
          <span key={s.status} class={`seg status-${s.status}`} style={{ width: `${s.pct}%` }} />
        ))}
      </div>
      <span class="small muted">
        {progress.succeeded ?? 0}/{total} done
      </span>
    </div>
  );
}

/** Whether a team-stream message concerns a study's runs (a tagged pretraining run, or one's evaluation). */
export function studyOf(m: StreamMessage, runIds?: Set<string>): string | null | true {
  if (m.event === "resync") return true;
  if (m.event !== "run" && m.event !== "alert") return null;
  const d = m.data as Partial<RunPublic> & { run_id?: string };
  const tag = d.tags?.find((t) => t.startsWith("study:"));
  if (tag) return tag.slice(6);
  const id = d.run_id ?? d.id;
  if (runIds && ((id && runIds.has(id)) || (d.parent_run_id && runIds.has(d.parent_run_id)))) return true;
  return null;
}

export function StudiesPage() {
  const [studies, setStudies] = useState<StudyPublic[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [page, setPage] = useState(0);
  const [reload, setReload] = useState(0);
  const timer = useRef<number | null>(null);

  useEffect(() => {
    const ctrl = new AbortController();
    api
      .studies(page * PAGE, PAGE + 1, ctrl.signal)
      .then((s) => {
        setStudies(s);
        setError(null);
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctrl.abort();
  }, [page, reload]);

  const onMessage = useCallback((m: StreamMessage) => {
    if (m.event !== "run" && m.event !== "resync") return; // progress is by status: alerts do not move it
    const d = m.data as Partial<RunPublic>;
    // A study's own runs carry its tag; their evaluations only a parent (any evaluation may be one of them).
    if (!studyOf(m) && !(d && d.kind !== "pretrain" && d.parent_run_id)) return;
    if (timer.current !== null) return;
    timer.current = window.setTimeout(() => {
      timer.current = null;
      setReload((n) => n + 1);
    }, 1500);
  }, []);
  useEffect(
    () => () => {
      if (timer.current !== null) clearTimeout(timer.current);
    },
    [],
  );
  const live = useTeamStream(onMessage);

  const shown = studies?.slice(0, PAGE) ?? [];
  return (
    <main class="page">
      <div class="page-head">
        <h1>Studies</h1>
        <LiveIndicator state={live} />
        <span class="spacer" />
        <Link href="/studies/new" class="btn primary" data-testid="new-study-link">
          New study
        </Link>
      </div>
      <p class="muted small">
        A study varies one or two settings from a base config, a run per value, each followed by the chosen evaluations,
        and reads the answer as a table, as the paper does.
      </p>
      {error ? <ErrorBox error={error} retry={() => setReload((n) => n + 1)} /> : null}
      {!studies && !error ? (
        <Loading what="studies" />
      ) : studies && studies.length === 0 && page === 0 ? (
        <Empty>
          No studies yet. <Link href="/studies/new">Start one</Link> from one of the paper's comparisons.
        </Empty>
      ) : studies ? (
        <div class="table-wrap">
          <table class="runs" data-testid="studies-table">
            <thead>
              <tr>
                <th scope="col">Study</th>
                <th scope="col">Template</th>
                <th scope="col">Varies</th>
                <th scope="col">Runs</th>
                <th scope="col">Evaluations</th>
                <th scope="col">Owner</th>
                <th scope="col">Age</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((s) => (
                <tr key={s.id} data-testid="studies-item" data-study-id={s.id}>
                  <td class="run-name">
                    <Link href={`/studies/${encodeURIComponent(s.id)}`}>{s.name}</Link>
                    <div class="muted small mono">
                      {s.id}
                      {s.project !== "default" ? ` · ${s.project}` : ""}
                    </div>
                  </td>
                  <td>{s.title ?? <span class="muted">custom</span>}</td>
                  <td class="small">{s.axes.map((a) => `${a.name} (${a.labels.length})`).join(" × ")}</td>
                  <td>
                    <ProgressBar progress={s.progress} total={s.runs} />
                  </td>
                  <td class="small">
                    <span class="progress" title={`${s.evals_done} of ${s.evals_total} evaluations done`}>
                      <span
                        class="bar"
                        style={{ width: `${s.evals_total ? (100 * s.evals_done) / s.evals_total : 0}%` }}
                      />
                      <span>
                        {s.evals_done}/{s.evals_total}
                      </span>
                    </span>{" "}
                    <span class="muted">{s.evaluations.join(", ")}</span>
                  </td>
                  <td>{s.owner}</td>
                  <td class="small" title={s.created_at}>
                    {timeAgo(s.created_at)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {studies && (page > 0 || studies.length > PAGE) && (
        <nav class="pager" aria-label="Pages">
          <button type="button" class="btn small" disabled={page === 0} onClick={() => setPage(page - 1)}>
            ← Previous
          </button>
          <span class="muted small">Page {page + 1}</span>
          <button type="button" class="btn small" disabled={studies.length <= PAGE} onClick={() => setPage(page + 1)}>
            Next →
          </button>
        </nav>
      )}
    </main>
  );
}
