// What a run asks for: machines x GPUs per machine (the API's `resources`). Pure functions, tested without a
// browser: the form's texts to the body's field with the errors of a bad count, and a run's size and placement
// in words. The spec's optim.batch_size stays the global batch; the server checks that it splits over them all.
import type { RunPublic } from "../../api/types";

export const MAX_NODES = 256; // server/runs/schemas.py
export const MAX_GPUS_PER_NODE = 64;
/** The body fields a 422 about resources may name. */
export const RESOURCE_FIELDS = ["resources", "resources.nodes", "resources.gpus_per_node"];

export interface Resources {
  nodes: number;
  gpus_per_node: number;
}

function count(text: string, most: number): number | null {
  const t = text.trim();
  if (t === "") return 1;
  if (!/^\d+$/.test(t)) return null;
  const n = Number(t);
  return n >= 1 && n <= most ? n : null;
}

/**
 * The form's two texts -> `resources` for the body (omitted for one GPU, the server's default, and for an
 * evaluation, which always runs on one), or the errors keyed by the field they belong to.
 */
export function resourcesOf(
  kind: string,
  gpus: string,
  nodes: string,
): { resources?: Resources; errors: Record<string, string> } {
  if (kind !== "pretrain") return { errors: {} };
  const errors: Record<string, string> = {};
  const per = count(gpus, MAX_GPUS_PER_NODE);
  const machines = count(nodes, MAX_NODES);
  if (per === null) errors["resources.gpus_per_node"] = `a whole number 1-${MAX_GPUS_PER_NODE}`;
  if (machines === null) errors["resources.nodes"] = `a whole number 1-${MAX_NODES}`;
  if (per === null || machines === null) return { errors };
  return per * machines === 1 ? { errors } : { resources: { nodes: machines, gpus_per_node: per }, errors };
}

/** '4 GPUs' (one machine), '2x4 GPUs' (machines x GPUs each), '1 GPU'. */
export function resourcesLabel(run: Pick<RunPublic, "nodes" | "gpus_per_node">): string {
  const nodes = run.nodes ?? 1;
  const per = run.gpus_per_node ?? 1;
  if (nodes * per === 1) return "1 GPU";
  return nodes === 1 ? `${per} GPUs` : `${nodes}x${per} GPUs`;
}
