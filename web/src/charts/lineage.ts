// Forks and rolled-back branches on one step axis (the compare page). A fork continues its parent's step
// numbering, so its curve already sits where it left the parent; a rollback branch's abandoned curve (steps
// to_step+1 .. from_step, GET /runs/{id}/branches/{n}/metrics) is drawn dashed in its run's colour. A vertical
// marker at each branch point shows where a line left its parent.
import type { LineagePublic } from "../api/types";
import type { Marker } from "./LineChart";

export interface LineageRun {
  id: string;
  label: string;
  color: string;
  kind: string;
  parentRunId: string | null;
  /** The step a fork left its parent at (RunPublic.parent_step); null for a run that is not a fork. */
  parentStep: number | null;
}

/** A rollback branch to fetch and draw dashed. */
export interface BranchLine {
  runId: string;
  branch: number;
  label: string;
  color: string;
  fromStep: number;
  toStep: number;
}

export const BRANCH_DASH = [6, 4];

/** The compare page's link for these runs (ids in order, deduplicated). */
export function compareHref(ids: string[]): string {
  return `/compare?ids=${Array.from(new Set(ids)).map(encodeURIComponent).join(",")}`;
}

/**
 * The branches to draw and the markers at the branch points, from the compared runs and their lineages (a run
 * whose lineage did not load still gets its fork marker from its own parent_step). Markers at one step share a
 * line, their labels joined.
 */
export function lineageOverlay(
  runs: LineageRun[],
  lineages: Map<string, LineagePublic | null>,
): { branches: BranchLine[]; markers: Marker[] } {
  const branches: BranchLine[] = [];
  const at = new Map<number, { labels: string[]; details: string[]; color: string }>();
  const mark = (step: number, label: string, detail: string, color: string) => {
    const m = at.get(step);
    if (m) {
      m.labels.push(label);
      m.details.push(detail);
    } else at.set(step, { labels: [label], details: [detail], color });
  };
  const labelOf = new Map(runs.map((r) => [r.id, r.label]));
  for (const r of runs) {
    const lin = lineages.get(r.id) ?? null;
    // an evaluation's parent_step is the checkpoint it reads, not a branch point
    const forkStep = r.kind === "pretrain" ? (lin?.parent?.step ?? r.parentStep) : null;
    const parentId = lin?.parent?.id ?? r.parentRunId;
    if (forkStep !== null && forkStep !== undefined && parentId) {
      const from = labelOf.get(parentId) ?? lin?.parent?.name ?? parentId;
      mark(forkStep, "fork", `${r.label} forked from ${from}`, r.color);
    }
    for (const b of lin?.branches ?? []) {
      branches.push({
        runId: r.id,
        branch: b.branch,
        label: `${r.label} · rollback ${b.branch} (abandoned)`,
        color: r.color,
        fromStep: b.from_step,
        toStep: b.to_step,
      });
      mark(
        b.to_step,
        `rollback ${b.branch}`,
        `rollback ${b.branch} of ${r.label} (back from step ${b.from_step})`,
        r.color,
      );
    }
  }
  const markers: Marker[] = Array.from(at.entries())
    .sort((a, b) => a[0] - b[0])
    .map(([step, m]) => ({
      step,
      label: Array.from(new Set(m.labels)).join(", "),
      detail: m.details.join("; "),
      kind: "branch" as const,
      color: m.color,
    }));
  return { branches, markers };
}

/** The branch's own key in the overlay's series map (a branch is drawn as a line of its own). */
export const branchKey = (b: { runId: string; branch: number }) => `${b.runId}#${b.branch}`;
