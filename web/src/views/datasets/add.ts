// The "Add dataset" form's request and where a refusal is shown. Pure functions, tested without a browser: the
// browser's own checks (the name's pattern, a path at all), the body, and the API's 422 by field.
import { DATASET_KINDS, type DatasetCreate, type ValidationItem } from "../../api/types";
import { errorsByField } from "../../form/schema";

/** The form's fields, as the API's 422 `loc` names them (["body", "path"] -> "path"). */
export const ADD_FIELDS = ["name", "path", "kind"];
/** mocov3_core/config.py DatasetRef: what `data.name` of a run may say. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]*$/;
export const AUTO_KIND = "";

export function addRequest(
  name: string,
  path: string,
  kind: string,
): { body?: DatasetCreate; errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const n = name.trim();
  const p = path.trim();
  if (!n) errors.name = "required";
  else if (n.length > 64) errors.name = "at most 64 characters";
  else if (!NAME_PATTERN.test(n))
    errors.name = "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit";
  if (!p) errors.path = "required: the dataset's folder on the workers' disks";
  const reader = DATASET_KINDS.find((k) => k === kind);
  if (kind !== AUTO_KIND && !reader) errors.kind = `auto-detect or one of ${DATASET_KINDS.join(", ")}`;
  if (Object.keys(errors).length) return { errors };
  return { body: { name: n, path: p, kind: reader ?? null }, errors };
}

/** A 422's items by the form's fields; what names none of them goes under "" (shown atop the form). */
export function addErrors(detail: ValidationItem[]): Record<string, string> {
  return errorsByField(detail, ADD_FIELDS);
}

/** mocov3_core/config.py PrepareConfig.short_side: 32 to MAX_IMAGE pixels. */
export const SHORT_SIDE = { min: 32, max: 4096, default: 256 };

/** The Prepare button's short side: a whole number of pixels in range, or why not. */
export function shortSideOf(text: string): { value?: number; error?: string } {
  const t = text.trim();
  if (!/^\d+$/.test(t)) return { error: "a whole number of pixels" };
  const n = Number(t);
  if (n < SHORT_SIDE.min || n > SHORT_SIDE.max) return { error: `between ${SHORT_SIDE.min} and ${SHORT_SIDE.max}` };
  return { value: n };
}

/** Where a refusal of the prepare request is shown: at the short side it names, else beside the button. */
export function prepareErrors(detail: ValidationItem[]): Record<string, string> {
  return errorsByField(detail, ["short_side", "quality"]);
}
