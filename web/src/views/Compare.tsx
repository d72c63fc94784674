// Compare runs: curves overlaid per metric, and a table like the paper's: one row per run, the settings
// that differ between them, and the accuracies. Forks and rolled-back branches share their parent's step axis:
// a fork's curve starts where it left the parent, a rollback's abandoned curve is drawn dashed, and a vertical
// marker stands at each branch point.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api/client";
import type { LineagePublic, RunDetail } from "../api/types";
import { lineageOverlay } from "../charts/lineage";
import { OverlayCharts, runColor } from "../charts/Overlay";
import { flatten } from "../form/schema";
import { navigate } from "../router";
import { Empty, ErrorBox, Link, Loading, StatusBadge, fmtAcc } from "../ui/common";

/** Dotted keys whose values differ between the specs (a key missing in one spec counts as differing). */
export function diffKeys(specs: Record<string, unknown>[]): string[] {
  const flats = specs.map((s) => flatten(s));
  const keys = new Set<string>();
  flats.forEach((f) => Object.keys(f).forEach((k) => keys.add(k)));
  return Array.from(keys)
    .filter((k) => {
      const vals = flats.map((f) => JSON.stringify(f[k] ?? null));
      return vals.some((v) => v !== vals[0]);
    })
    .filter((k) => k !== "name")
    .sort();
}

const label = (r: RunDetail) => r.name || r.id;
const parentStep = (r: RunDetail) => r.parent_step ?? null;

export function ComparePage({ ids }: { ids: string[] }) {
  const [runs, setRuns] = useState<RunDetail[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [input, setInput] = useState(ids.join(", "));
  const [lineages, setLineages] = useState<Map<string, LineagePublic | null>>(new Map());

  useEffect(() => {
    if (ids.length === 0) return;
    setRuns(null);
    const ctrl = new AbortController();
    Promise.all(ids.map((id) => api.run(id, ctrl.signal)))
      .then(setRuns)
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctrl.abort();
  }, [ids.join(",")]);
  // Each run's lineage (its rollback branches, its fork point); a run without one (an older server, an
  // evaluation) is drawn without.
  useEffect(() => {
    if (ids.length === 0) return;
    const ctrl = new AbortController();
    Promise.all(ids.map((id) => api.lineage(id, ctrl.signal).catch(() => null))).then((ls) => {
      if (!ctrl.signal.aborted) setLineages(new Map(ids.map((id, i) => [id, ls[i]])));
    });
    return () => ctrl.abort();
  }, [ids.join(",")]);
  const diff = useMemo(() => (runs ? diffKeys(runs.map((r) => r.spec)) : []), [runs]);
  const overlay = useMemo(
    () =>
      lineageOverlay(
        (runs ?? []).map((r, i) => ({
          id: r.id,
          label: label(r),
          color: runColor(i),
          kind: r.kind,
          parentRunId: r.parent_run_id,
          parentStep: parentStep(r),
        })),
        lineages,
      ),
    [runs, lineages],
  );

  const picker = (
    <form
      class="filters"
      onSubmit={(e) => {
        e.preventDefault();
        navigate(
          `/compare?ids=${input
            .split(/[\s,]+/)
            .filter(Boolean)
            .map(encodeURIComponent)
            .join(",")}`,
        );
      }}
    >
      <label>
        Run ids{" "}
        <input
          value={input}
          size={60}
          data-testid="compare-ids"
          onInput={(e) => setInput((e.target as HTMLInputElement).value)}
        />
      </label>
      <button type="submit" class="btn small">
        Compare
      </button>
    </form>
  );

  if (ids.length === 0) {
    return (
      <main class="page">
        <h1>Compare</h1>
        {picker}
        <Empty>
          Select two or more runs on the <Link href="/">runs page</Link> and press Compare, or paste their ids above.
        </Empty>
      </main>
    );
  }
  if (error)
    return (
      <main class="page">
        <h1>Compare</h1>
        {picker}
        <ErrorBox error={error} />
      </main>
    );
  if (!runs)
    return (
      <main class="page">
        <h1>Compare</h1>
        <Loading what="runs" />
      </main>
    );

  const color = runColor;
  const nBranches = (id: string) => lineages.get(id)?.branches?.length ?? 0;
  const flats = runs.map((r) => flatten(r.spec));
  return (
    <main class="page">
      <div class="page-head">
        <h1>Compare {runs.length} runs</h1>
      </div>
      {picker}
      <div class="table-wrap">
        <table class="simple compare" data-testid="compare-table">
          <thead>
            <tr>
              <th scope="col">Run</th>
              <th scope="col">Status</th>
              {diff.map((k) => (
                <th scope="col" key={k} class="mono small">
                  {k}
                </th>
              ))}
              <th scope="col">kNN top-1</th>
              <th scope="col">Linear top-1</th>
              <th scope="col">Fine-tune top-1</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((r, i) => (
              <tr key={r.id} data-testid="compare-row" data-run-id={r.id}>
                <td>
                  <span class="swatch" style={{ background: color(i) }} />{" "}
                  <Link href={`/runs/${encodeURIComponent(r.id)}`}>{label(r)}</Link>
                  {r.kind === "pretrain" && r.parent_run_id && parentStep(r) !== null && (
                    <div class="muted small" data-testid="compare-fork-of">
                      fork of{" "}
                      <Link href={`/runs/${encodeURIComponent(r.parent_run_id)}`}>
                        {runs.find((p) => p.id === r.parent_run_id)?.name || r.parent_run_id}
                      </Link>{" "}
                      at step {parentStep(r)}
                    </div>
                  )}
                  {nBranches(r.id) > 0 && (
                    <div class="muted small" data-testid="compare-branches">
                      {nBranches(r.id)} rollback branch{nBranches(r.id) > 1 ? "es" : ""} (dashed)
                    </div>
                  )}
                </td>
                <td>
                  <StatusBadge status={r.status} />
                </td>
                {diff.map((k) => (
                  <td key={k} class="mono small">
                    {JSON.stringify(flats[i][k] ?? null)}
                  </td>
                ))}
                <td class="num">
                  <b>{fmtAcc(r.best_knn_top1)}</b>
                </td>
                <td class="num">
                  <b>{fmtAcc(r.best_linear_top1)}</b>
                </td>
                <td class="num">
                  <b>{fmtAcc(r.best_finetune_top1)}</b>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {diff.length === 0 && <p class="muted small">These runs have identical configs.</p>}
      <h2>Curves</h2>
      {overlay.markers.length > 0 && (
        <p class="muted small" data-testid="compare-branch-points">
          On one step axis: a fork continues its parent's step numbering; vertical lines mark where a line left its
          parent ({overlay.markers.map((m) => `step ${m.step}: ${m.detail ?? m.label}`).join("; ")})
          {overlay.branches.length ? "; dashed lines are the steps a rollback abandoned" : ""}.
        </p>
      )}
      <OverlayCharts
        runs={runs.map((r, i) => ({ id: r.id, label: label(r), color: color(i) }))}
        syncKey="compare"
        branches={overlay.branches}
        markers={overlay.markers}
      />
    </main>
  );
}
