// The Logs tab: the run's events (status, log lines, alerts, checkpoints, results, config), one line each.
import type { RunEvent } from "../../api/types";
import { Empty, Loading, fmtNum } from "../../ui/common";

export function LogsPanel({ logs }: { logs: RunEvent[] | null }) {
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
  if (e.type === "rollback")
    return `branch ${p.branch}: rolled back from step ${p.from_step} to the checkpoint at step ${p.to_step} after ${p.alert_kind} at step ${p.alert_step}; lr × ${fmtNum(p.lr_scale)}${Array.isArray(p.skipped) ? `, batches ${p.skipped[0]}–${p.skipped[1]} skipped` : ""}`;
  return JSON.stringify(p).slice(0, 300);
}
