// The runs table: status, progress, the kNN probe apart from kNN evaluations, linear, alerts, tags.
import type { RunPublic } from "../../api/types";
import { Link, StatusBadge, fmtAcc, timeAgo } from "../../ui/common";
import { knnEvalCell, knnProbeCell } from "./knn";
import { alertKinds } from "./live";

/** Kinds that read no checkpoint: a pretraining run (its model is its own) and a dataset's scan or packing. */
const OWN_MODEL = ["pretrain", "prepare"];

function progress(r: RunPublic): { pct: number | null; text: string } {
  if (r.total_steps && r.step !== null) {
    const pct = Math.min(100, (100 * r.step) / r.total_steps);
    return { pct, text: `${r.step}/${r.total_steps}` };
  }
  return { pct: null, text: r.step !== null ? `step ${r.step}` : "—" };
}

export function RunsTable({
  rows,
  loading,
  selected,
  toggle,
  setParam,
}: {
  rows: RunPublic[];
  loading: boolean;
  selected: string[];
  toggle: (id: string) => void;
  setParam: (changes: Record<string, string | number>) => void;
}) {
  return (
    <div class={`table-wrap${loading ? " dim" : ""}`}>
      <table class="runs" data-testid="runs-table" aria-busy={loading}>
        <thead>
          <tr>
            <th scope="col">
              <span class="sr-only">Select</span>
            </th>
            <th scope="col">Run</th>
            <th scope="col">Status</th>
            <th scope="col">Kind</th>
            <th scope="col">Model</th>
            <th scope="col">Framework</th>
            <th scope="col">Progress</th>
            <th
              scope="col"
              data-testid="runs-col-knn-probe"
              title="The monitor's kNN probe: top-1 (%) on a few hundred images at the step shown"
            >
              kNN probe (step)
            </th>
            <th scope="col" data-testid="runs-col-knn-eval" title="Best kNN evaluation top-1 (%)">
              kNN eval
            </th>
            <th scope="col" title="Best linear-probe top-1 (%)">
              Linear
            </th>
            <th scope="col">Alerts</th>
            <th scope="col">Owner</th>
            <th scope="col">Tags</th>
            <th scope="col">Age</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => {
            const pr = progress(r);
            const probe = knnProbeCell(r);
            const knnEval = knnEvalCell(r);
            return (
              <tr key={r.id} data-testid="run-row" data-run-id={r.id} class={selected.includes(r.id) ? "selected" : ""}>
                <td>
                  <input
                    type="checkbox"
                    checked={selected.includes(r.id)}
                    onChange={() => toggle(r.id)}
                    aria-label={`Select run ${r.name ?? r.id}`}
                    data-testid="run-select"
                  />
                </td>
                <td class="run-name">
                  <Link href={`/runs/${encodeURIComponent(r.id)}`}>{r.name || r.id}</Link>
                  <div class="muted small mono">
                    {r.id}
                    {r.project !== "default" ? ` · ${r.project}` : ""}
                  </div>
                </td>
                <td>
                  <StatusBadge status={r.status} />
                </td>
                <td>{r.kind}</td>
                <td class="mono small">{r.model ?? (OWN_MODEL.includes(r.kind) ? "—" : "from checkpoint")}</td>
                <td class="small">{r.framework ?? (r.kind === "pretrain" ? "—" : r.kind)}</td>
                <td>
                  {pr.pct !== null ? (
                    <div class="progress" title={pr.text}>
                      <div class="bar" style={{ width: `${pr.pct}%` }} />
                      <span>{pr.text}</span>
                    </div>
                  ) : (
                    <span class="muted small">{pr.text}</span>
                  )}
                </td>
                <td class="num" data-testid="run-knn-probe" title={probe.title}>
                  {probe.text}
                </td>
                <td class="num" data-testid="run-knn-eval" title={knnEval.title}>
                  {knnEval.text}
                </td>
                <td class="num">{fmtAcc(r.best_linear_top1)}</td>
                <td>
                  {r.alert_count ? (
                    <span
                      class="badge alert"
                      data-testid="alert-badge"
                      title={alertKinds.get(r.id) ?? `${r.alert_count} stability alert${r.alert_count > 1 ? "s" : ""}`}
                    >
                      ⚠ {r.alert_count}
                    </span>
                  ) : (
                    ""
                  )}
                </td>
                <td>{r.owner}</td>
                <td>
                  {r.tags.map((t) => (
                    <button
                      type="button"
                      key={t}
                      class="tag"
                      onClick={() => setParam({ tag: t })}
                      title={`Filter by tag ${t}`}
                    >
                      {t}
                    </button>
                  ))}
                </td>
                <td class="small" title={r.created_at}>
                  {timeAgo(r.created_at)}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
