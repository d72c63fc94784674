// The Fork dialog's logic: a new run from one of this run's checkpoints, with changed settings. The few fields
// people change when they fork (lr, length, the monitor's policy) are inputs from the JSON Schema; anything else
// is a dotted key=value row. The request carries overrides only: the server applies them on the parent's spec.
import type { CheckpointPublic, ForkRequest, ValidationItem } from "../../api/types";
import { errorsByField, overridesOf, type FieldDef } from "../../form/schema";
import { parseOverrides } from "../../studies/logic";

/** The inputs the dialog shows (those the schema has, in this order). */
export const FORK_FIELDS = ["optim.base_lr", "optim.epochs", "train.max_steps", "monitor.policy"];

export interface ForkForm {
  /** The checkpoint's step; null = the latest (the server's default). */
  step: number | null;
  name: string;
  /** The common fields' texts, by dotted path (as SchemaForm keeps them). */
  texts: Record<string, string>;
  /** key=value, one a line. */
  rows: string;
}

/** The checkpoints one can fork from, latest first (a checkpoint saved after non-finite values is still listed,
 * marked: forking from it with a lower lr is a legitimate experiment). */
export function forkCheckpoints(checkpoints: CheckpointPublic[]): CheckpointPublic[] {
  const bySteps = new Map<number, CheckpointPublic>();
  for (const c of checkpoints) bySteps.set(c.step, c);
  return Array.from(bySteps.values()).sort((a, b) => b.step - a.step);
}

/**
 * The POST /runs/{id}/fork body, or the errors the browser finds itself: keyed by field path (a common field),
 * "rows" (a row that is not key=value, or names no field / sets a common field twice), "name".
 */
export function buildForkRequest(
  form: ForkForm,
  fields: FieldDef[],
  base: Record<string, unknown>,
): { body: ForkRequest | null; errors: Record<string, string> } {
  const common = fields.filter((f) => FORK_FIELDS.includes(f.path));
  const { overrides, errors } = overridesOf(common, base, form.texts);
  const rows = parseOverrides(form.rows, new Map(fields.map((f) => [f.path, f])));
  const rowErrors = Object.values(rows.errors);
  for (const k of Object.keys(rows.overrides)) {
    if (k in overrides) rowErrors.push(`${k}: set both above and in a row; keep one`);
    else overrides[k] = rows.overrides[k];
  }
  if (rowErrors.length) errors.rows = rowErrors.join("; ");
  if (form.name.length > 200) errors.name = "at most 200 characters";
  if (Object.keys(errors).length) return { body: null, errors };
  const body: ForkRequest = { overrides };
  if (form.step !== null) body.checkpoint_step = form.step;
  if (form.name.trim()) body.name = form.name.trim();
  return { body, errors: {} };
}

/**
 * The API's 422 on a fork, by where the dialog shows it: a common field's path, "checkpoint_step", "name", "rows"
 * (an override the rows set), or "" (atop the dialog).
 */
export function forkErrors(detail: ValidationItem[], rowKeys: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (k: string, msg: string) => (out[k] = out[k] ? `${out[k]}; ${msg}` : msg);
  const rest: ValidationItem[] = [];
  for (const item of detail) {
    const loc = (item.loc ?? []).map(String);
    const where = loc[0] === "body" ? loc.slice(1) : loc;
    if (where[0] === "checkpoint_step" || where[0] === "name") add(where[0], item.msg);
    else rest.push(item);
  }
  for (const [k, msg] of Object.entries(errorsByField(rest, [...FORK_FIELDS, ...rowKeys]))) {
    if (k === "" || FORK_FIELDS.includes(k)) add(k, msg);
    else add("rows", `${k}: ${msg}`);
  }
  return out;
}
