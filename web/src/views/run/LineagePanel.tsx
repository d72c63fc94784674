// The Lineage tab: where this run came from (a fork's parent and step), the runs forked from it, and the
// branches its rollbacks left (from which step back to which checkpoint, after what alert, with what lr).
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { LineagePublic } from "../../api/types";
import { Empty, ErrorBox, Link, Loading, StatusBadge, fmtNum, timeAgo } from "../../ui/common";
import { alertLabel } from "./alertKinds";
import { compareHref } from "../../charts/lineage";

/** The run's lineage, refetched (debounced) whenever `tick` changes. */
export function useLineage(id: string, tick: number) {
  const [lineage, setLineage] = useState<LineagePublic | null>(null);
  const [error, setError] = useState<unknown>(null);
  const timer = useRef<number | null>(null);
  useEffect(() => {
    const ctrl = new AbortController();
    const load = () =>
      api
        .lineage(id, ctrl.signal)
        .then((l) => {
          setLineage(l);
          setError(null);
        })
        .catch((e) => {
          if ((e as Error).name !== "AbortError") setError(e);
        });
    if (tick === 0) void load();
    else timer.current = window.setTimeout(load, 500);
    return () => {
      ctrl.abort();
      if (timer.current !== null) clearTimeout(timer.current);
    };
  }, [id, tick]);
  return { lineage, error };
}

const runHref = (id: string) => `/runs/${encodeURIComponent(id)}`;

export function LineagePanel({ id, lineage, error }: { id: string; lineage: LineagePublic | null; error: unknown }) {
  if (error) return <ErrorBox error={error} />;
  if (!lineage) return <Loading what="lineage" />;
  const parent = lineage.parent ?? null;
  const forks = lineage.forks ?? [];
  const branches = lineage.branches ?? [];
  const nothing = !parent && forks.length === 0 && branches.length === 0;
  return (
    <section aria-label="Lineage" data-testid="lineage-panel">
      {nothing && (
        <Empty>
          No forks and no rollbacks: this run has one line. Fork it from a checkpoint (Fork above) to try other settings
          from that point on.
        </Empty>
      )}
      {parent && (
        <p data-testid="lineage-parent">
          Forked from <Link href={runHref(parent.id)}>{parent.name || parent.id}</Link> at step{" "}
          <b>{parent.step ?? "?"}</b> ·{" "}
          <Link href={compareHref([parent.id, id])} data-testid="lineage-compare-parent">
            compare with it
          </Link>
        </p>
      )}
      {forks.length > 0 && (
        <>
          <h2>
            Forks{" "}
            <Link
              class="btn small"
              href={compareHref([id, ...forks.map((f) => f.id)])}
              data-testid="lineage-compare-forks"
            >
              Compare on this run's steps
            </Link>
          </h2>
          <table class="simple" data-testid="lineage-forks">
            <thead>
              <tr>
                <th scope="col">Run</th>
                <th scope="col">Status</th>
                <th scope="col" class="num">
                  From step
                </th>
              </tr>
            </thead>
            <tbody>
              {forks.map((f) => (
                <tr key={f.id} data-testid="lineage-fork" data-run-id={f.id} data-step={f.step}>
                  <td>
                    <Link href={runHref(f.id)}>{f.name || f.id}</Link>
                  </td>
                  <td>
                    <StatusBadge status={f.status} />
                  </td>
                  <td class="num">{f.step}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {branches.length > 0 && (
        <>
          <h2>
            Rollback branches{" "}
            <Link class="btn small" href={compareHref([id])} data-testid="lineage-compare-branches">
              Draw them on the curves
            </Link>
          </h2>
          <p class="muted small">
            Each rollback abandoned the steps after its checkpoint and trained them again with a lower learning rate;
            the abandoned curve is kept as a branch.
          </p>
          <table class="simple" data-testid="lineage-branches">
            <thead>
              <tr>
                <th scope="col">Branch</th>
                <th scope="col">Rolled back</th>
                <th scope="col">After</th>
                <th scope="col" class="num">
                  lr × after
                </th>
                <th scope="col">Batches skipped</th>
                <th scope="col">When</th>
              </tr>
            </thead>
            <tbody>
              {branches.map((b) => (
                <tr key={b.branch} data-testid="lineage-branch" data-branch={b.branch}>
                  <td class="num">{b.branch}</td>
                  <td>
                    from step <b>{b.from_step}</b> to the checkpoint at step <b>{b.to_step}</b>
                  </td>
                  <td>
                    {b.alert_step !== null ? (
                      <Link href={`${runHref(id)}?step=${b.alert_step}`}>
                        {alertLabel(b.alert_kind)} at step {b.alert_step}
                      </Link>
                    ) : (
                      alertLabel(b.alert_kind)
                    )}
                  </td>
                  <td class="num">{fmtNum(b.lr_scale)}</td>
                  <td>{b.skipped && b.skipped.length === 2 ? `steps ${b.skipped[0]}–${b.skipped[1]}` : "none"}</td>
                  <td class="small">{timeAgo(b.time)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
