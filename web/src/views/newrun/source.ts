// What an evaluation (knn, linear, finetune) reads: a checkpoint named by its pretraining run and step, never
// by a path (the server refuses a spec's `checkpoint` and resolves `run_id` within the caller's teams).
// Pure functions, tested without a browser: the runs offered, the steps offered, the body's fields and where a
// 422 about them is shown.
import type { CheckpointPublic, RunPublic } from "../../api/types";

/** The spec field the picker replaces: hidden from the generated form of an evaluation. */
export const CHECKPOINT_FIELD = "checkpoint";
/** The body fields the picker sends, which a 422 may name. */
export const SOURCE_FIELDS = ["run_id", "checkpoint_step"];

export const isEvaluation = (kind: string) => kind !== "pretrain";

/**
 * The pretraining runs an evaluation can read: those that may have saved a checkpoint (any but queued), the
 * succeeded first, then the newest first (the API lists them newest first already, and sort is stable).
 */
export function pretrainChoices(runs: RunPublic[]): RunPublic[] {
  return runs
    .filter((r) => r.kind === "pretrain" && r.status !== "queued")
    .sort((a, b) => Number(b.status === "succeeded") - Number(a.status === "succeeded"));
}

/** A run's label in the picker: its name (or id), status and step. */
export function runLabel(r: RunPublic): string {
  const step = r.step !== null && r.step !== undefined ? `, step ${r.step}` : "";
  return `${r.name || r.id} (${r.status}${step})`;
}

/** The steps that can be picked, latest first, each once (a resumed run may save a step twice). */
export function checkpointSteps(checkpoints: CheckpointPublic[]): number[] {
  return Array.from(new Set(checkpoints.map((c) => c.step))).sort((a, b) => b - a);
}

/**
 * The body's fields for the picker's choice: `run_id` and, unless "latest" (""), `checkpoint_step`. An
 * evaluation without a run (a random-init or raw-pixel baseline) sends neither; a pretraining run never does.
 */
export function sourceFields(kind: string, runId: string, step: string): Record<string, unknown> {
  if (!isEvaluation(kind) || !runId) return {};
  return step === "" ? { run_id: runId } : { run_id: runId, checkpoint_step: Number(step) };
}

/** A 422 about the spec's `checkpoint` (a baseline without one, say) is shown beside the run picker. */
export function moveCheckpointError(errors: Record<string, string>): Record<string, string> {
  if (!(CHECKPOINT_FIELD in errors)) return errors;
  const { [CHECKPOINT_FIELD]: msg, ...rest } = errors;
  return { ...rest, run_id: rest.run_id ? `${rest.run_id}; ${msg}` : msg };
}
