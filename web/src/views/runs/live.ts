// The runs table kept live from the team stream: alert counts bumped once per alert, and which new runs
// belong on the page shown (the same filters as the server's).
import type { RunQuery } from "../../api/client";
import type { RunPublic } from "../../api/types";

export interface AlertMessage {
  run_id?: string;
  seq?: number;
  kind?: string;
}

// Alert kinds seen live this session, by run (the badge's title); counts come with the run itself.
export const alertKinds = new Map<string, string>();

/**
 * A team-stream `alert` bumps its row's count once: only when its seq is past the row's last_seq (a `run`
 * snapshot taken after the alert already counts it), and the row's last_seq moves up to it.
 */
export function bumpAlerts(rows: RunPublic[], a: AlertMessage): RunPublic[] {
  if (!a || typeof a.run_id !== "string") return rows;
  const i = rows.findIndex((r) => r.id === a.run_id);
  if (i < 0) return rows;
  const r = rows[i];
  if (a.kind) {
    const kinds = new Set((alertKinds.get(r.id) ?? "").split(", ").filter(Boolean));
    kinds.add(a.kind);
    alertKinds.set(r.id, Array.from(kinds).join(", "));
  }
  if (typeof a.seq === "number" && a.seq <= r.last_seq) return rows;
  const next = rows.slice();
  next[i] = { ...r, alert_count: (r.alert_count ?? 0) + 1, last_seq: typeof a.seq === "number" ? a.seq : r.last_seq };
  return next;
}

export function matches(r: RunPublic, f: RunQuery): boolean {
  if (f.status && r.status !== f.status) return false;
  if (f.kind && r.kind !== f.kind) return false;
  if (f.project && r.project !== f.project) return false;
  if (f.tag && !r.tags.includes(f.tag)) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    if (![r.id, r.name ?? "", r.project, r.owner, ...r.tags].some((s) => s.toLowerCase().includes(q))) return false;
  }
  return true;
}
