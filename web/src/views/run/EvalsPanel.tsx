// The Evaluations tab: start an evaluation of the latest checkpoint; results and evaluation runs still pending.
import type { EvalKind, EvalResultPublic, RunDetail, RunPublic } from "../../api/types";
import { Empty, Link, StatusBadge, fmtAcc, timeAgo } from "../../ui/common";

export function EvalsPanel(p: {
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
