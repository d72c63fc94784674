// The pure logic of the study pages: the study request built from the form (axes as a spec path and
// comma-separated values, parsed by the field's type from the JSON Schema), the API's 422 `loc`s mapped to
// the axis value or field they name, the 2-D grid of a two-axis study, and small display helpers.
import type {
  AxisIn,
  EvalKind,
  StudyCreate,
  StudyDetail,
  StudyRow,
  TemplatePublic,
  ValidationItem,
  WireValue,
} from "../api/types";
import { parseText, type FieldDef } from "../form/schema";

// ----------------------------------------------------------------- the form

export interface AxisForm {
  /** The dotted spec key the values set, e.g. optim.base_lr. */
  path: string;
  /** Comma-separated values, e.g. "1e-4, 3e-4" (JSON lists in brackets stay whole). */
  text: string;
  /** Optional name of the axis (default: the path). */
  name?: string;
  /** Labels to keep for given values (JSON of the value -> label), e.g. a template's "1.0e-4". */
  labels?: Record<string, string>;
}

export interface StudyForm {
  name: string;
  /** A template name; with `axes` empty its own axes are used. */
  template: string;
  axes: AxisForm[];
  preset: string;
  /** "key=value" per line (or comma-separated). */
  overrides: string;
  evaluations: EvalKind[];
  project: string;
  tags: string;
  queue: string;
  notes: string;
}

export const emptyForm = (): StudyForm => ({
  name: "",
  template: "",
  axes: [],
  preset: "",
  overrides: "",
  evaluations: ["knn"],
  project: "default",
  tags: "",
  queue: "",
  notes: "",
});

/** Split on commas that are outside brackets, braces and quotes; trims; drops empty items. */
export function splitValues(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quote = "";
  let cur = "";
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = "";
    } else if (ch === '"' || ch === "'") quote = ch;
    else if (ch === "[" || ch === "{") depth++;
    else if (ch === "]" || ch === "}") depth = Math.max(0, depth - 1);
    else if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
      continue;
    }
    cur += ch;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter(Boolean);
}

const unquote = (s: string) => (/^(["']).*\1$/.test(s) ? s.slice(1, -1) : s);

/** One value's text as the field's type (booleans also as yes/no, on/off); without a field, JSON or a string. */
export function parseValue(
  field: FieldDef | undefined,
  text: string,
): { ok: true; value: unknown } | { ok: false; error: string } {
  const t = unquote(text.trim());
  if (!field) {
    try {
      return { ok: true, value: JSON.parse(t) };
    } catch {
      return { ok: true, value: t };
    }
  }
  if (field.type === "boolean") {
    const l = t.toLowerCase();
    if (["true", "yes", "on", "1"].includes(l)) return { ok: true, value: true };
    if (["false", "no", "off", "0"].includes(l)) return { ok: true, value: false };
    return { ok: false, error: "true or false" };
  }
  if (field.nullable && (t === "null" || t === "none")) return { ok: true, value: null };
  return parseText(field, t);
}

/** key=value lines (or comma-separated pairs) -> overrides, each value parsed by its field. */
export function parseOverrides(
  text: string,
  fields: Map<string, FieldDef>,
): { overrides: Record<string, unknown>; errors: Record<string, string> } {
  const overrides: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  const items = text.split("\n").flatMap((line) => splitValues(line));
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) {
      errors["overrides"] = `"${item}": write key=value`;
      continue;
    }
    const key = item.slice(0, eq).trim();
    const field = fields.get(key);
    if (fields.size && !field) {
      errors[`overrides.${key}`] = `${key}: no such field`;
      continue;
    }
    const p = parseValue(field, item.slice(eq + 1));
    if (p.ok) overrides[key] = p.value;
    else errors[`overrides.${key}`] = `${key}: ${p.error}`;
  }
  return { overrides, errors };
}

/**
 * The POST /studies body from the form, or the errors the browser can find itself, keyed as the API's are
 * mapped by `studyErrorKey` ("name", "axes.0.path", "axes.0.values.1", "overrides.optim.base_lr", ...).
 */
export function buildStudyRequest(
  form: StudyForm,
  fields: FieldDef[],
): { body: StudyCreate | null; errors: Record<string, string> } {
  const byPath = new Map(fields.map((f) => [f.path, f]));
  const errors: Record<string, string> = {};
  if (!form.name.trim()) errors.name = "give the study a name";
  if (!form.evaluations.length) errors.evaluations = "choose at least one evaluation";
  const { overrides, errors: oErr } = parseOverrides(form.overrides, byPath);
  Object.assign(errors, oErr);
  let axes: AxisIn[] | undefined;
  if (form.axes.length) {
    axes = form.axes.map((a, i) => {
      const path = a.path.trim();
      const field = byPath.get(path);
      if (!path) errors[`axes.${i}.path`] = "pick a field";
      else if (byPath.size && !field) errors[`axes.${i}.path`] = `${path}: no such field`;
      const texts = splitValues(a.text);
      if (!texts.length) errors[`axes.${i}`] = "give one or more values, comma-separated";
      const seen = new Set<string>();
      const values = texts.map((t, j) => {
        const p = parseValue(field, t);
        if (!p.ok) {
          errors[`axes.${i}.values.${j}`] = `${t}: ${p.error}`;
          return null;
        }
        const key = JSON.stringify(p.value);
        if (seen.has(key)) errors[`axes.${i}.values.${j}`] = `${t}: given twice`;
        seen.add(key);
        const label = a.labels?.[key];
        return label ? { label, value: p.value } : p.value;
      });
      const axis: AxisIn = { path, values };
      if (a.name?.trim()) axis.name = a.name.trim();
      return axis;
    });
    if (axes.length > 2) errors.axes = "a study varies one or two settings";
  } else if (!form.template) errors.axes = "pick a template or define an axis";
  if (Object.keys(errors).length) return { body: null, errors };
  const body: StudyCreate = {
    name: form.name.trim(),
    overrides,
    evaluations: form.evaluations,
    project: form.project.trim() || "default",
    tags: form.tags
      .split(",")
      .map((t) => t.trim())
      .filter(Boolean),
    notes: form.notes,
  };
  if (form.template) body.template = form.template;
  if (axes) body.axes = axes;
  if (form.preset) body.preset = form.preset;
  if (form.queue.trim()) body.queue = form.queue.trim();
  return { body, errors };
}

/**
 * A template's axes as editable axes, where each axis sets one spec key (the optimizer template's values
 * set several: null). Values keep the template's labels, so the paper's numbers still line up.
 */
export function templateAxes(t: TemplatePublic): AxisForm[] | null {
  const out: AxisForm[] = [];
  for (let i = 0; i < t.axes.length; i++) {
    const vals = t.values[i] ?? [];
    const keys = new Set(vals.flatMap((v) => Object.keys(v)));
    if (keys.size !== 1 || vals.some((v) => Object.keys(v).length !== 1)) return null;
    const path = Array.from(keys)[0];
    const labels: Record<string, string> = {};
    vals.forEach((v, j) => (labels[JSON.stringify(v[path])] = t.axes[i].labels[j]));
    out.push({
      path,
      name: t.axes[i].name,
      labels,
      text: vals.map((v) => (typeof v[path] === "string" ? (v[path] as string) : JSON.stringify(v[path]))).join(", "),
    });
  }
  return out;
}

// ----------------------------------------------------------------- the API's 422

/**
 * Where a validation item belongs on the form: ["body","axes","0","values","1","optim","base_lr"] ->
 * "axes.0.values.1"; ["body","axes","0","path"] -> "axes.0.path"; ["body","axes","0","values"] -> "axes.0";
 * ["body","overrides","optim.base_lr"] -> "overrides.optim.base_lr"; ["body","eval_overrides",...] ->
 * "evaluations"; other body fields by name; "" when nothing matches.
 */
export function studyErrorKey(loc: (string | number)[]): string {
  const l = loc.map(String);
  const rest = l[0] === "body" ? l.slice(1) : l;
  const [head, ...tail] = rest;
  if (head === "axes") {
    if (tail.length === 0) return "axes";
    const [i, what, j] = tail;
    if (what === "values" && j !== undefined && /^\d+$/.test(j)) return `axes.${i}.values.${j}`;
    if (what === "path" || what === "name") return `axes.${i}.path`;
    return `axes.${i}`;
  }
  if (head === "overrides") return tail.length ? `overrides.${tail.join(".")}` : "overrides";
  if (head === "eval_overrides" || head === "evaluations") return "evaluations";
  if (["name", "template", "preset", "project", "tags", "queue", "notes"].includes(head)) return head;
  return "";
}

export function studyErrors(detail: ValidationItem[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of detail) {
    const key = studyErrorKey(item.loc ?? []);
    const rest = (item.loc ?? []).map(String).slice(1);
    const msg = key === "" && rest.length ? `${rest.join(".")}: ${item.msg}` : item.msg;
    out[key] = out[key] ? `${out[key]}; ${msg}` : msg;
  }
  return out;
}

// ----------------------------------------------------------------- the study page

export interface Grid {
  rows: string[];
  cols: string[];
  /** cells[r][c]: the study row for (rows[r], cols[c]), or null. */
  cells: (StudyRow | null)[][];
}

/** A two-axis study as a grid: the first axis down, the second across, in the axes' order. */
export function gridOf(rows: StudyRow[], axes: { labels: string[] }[]): Grid {
  const order = (k: number) => {
    const labels = [...(axes[k]?.labels ?? [])];
    for (const r of rows) if (r.labels[k] !== undefined && !labels.includes(r.labels[k])) labels.push(r.labels[k]);
    return labels;
  };
  const rs = order(0);
  const cs = order(1);
  const cells = rs.map(() => cs.map((): StudyRow | null => null));
  for (const r of rows) {
    const i = rs.indexOf(r.labels[0]);
    const j = cs.indexOf(r.labels[1]);
    if (i >= 0 && j >= 0) cells[i][j] = r;
  }
  return { rows: rs, cols: cs, cells };
}

export const PROGRESS_ORDER = ["succeeded", "running", "queued", "failed", "lost", "cancelled"];

/** Status counts as bar segments in a fixed order, each with its share of the total in percent. */
export function progressSegments(progress: Record<string, number>): { status: string; n: number; pct: number }[] {
  const total = Object.values(progress).reduce((a, b) => a + b, 0);
  if (!total) return [];
  const keys = [...PROGRESS_ORDER, ...Object.keys(progress).filter((k) => !PROGRESS_ORDER.includes(k))];
  return keys.filter((k) => progress[k]).map((k) => ({ status: k, n: progress[k], pct: (100 * progress[k]) / total }));
}

const num = (v: WireValue): number => (typeof v === "number" ? v : Number.NaN);

/**
 * An SVG path of (step, value) points in a w x h box; y over [lo, hi] (default: the data's range);
 * non-finite points break the line. Returns "" with no finite point.
 */
export function sparkPath(points: [number, WireValue][], w: number, h: number, range?: [number, number]): string {
  const pts = points.map(([s, v]) => [s, num(v)] as [number, number]);
  const fin = pts.filter(([, v]) => Number.isFinite(v));
  if (!fin.length) return "";
  const x0 = pts[0][0];
  const x1 = pts[pts.length - 1][0];
  const lo = range ? range[0] : Math.min(...fin.map((p) => p[1]));
  const hi = range ? range[1] : Math.max(...fin.map((p) => p[1]));
  const sx = (s: number) => (x1 === x0 ? w / 2 : ((s - x0) / (x1 - x0)) * w);
  const sy = (v: number) => (hi === lo ? h / 2 : h - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * h);
  let d = "";
  let pen = false;
  for (const [s, v] of pts) {
    if (!Number.isFinite(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${sx(s).toFixed(1)},${sy(v).toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** The study's best value per evaluation column (to bold it), ignoring missing ones. */
const ENDED = new Set(["succeeded", "failed", "cancelled"]);

/** The study's runs a cancel would stop: pretrainings and evaluations not ended, and not already asked to stop. */
export function runsToCancel(study: Pick<StudyDetail, "rows">): number {
  let n = 0;
  for (const row of study.rows) {
    if (row.run && !ENDED.has(row.run.status) && !row.run.cancel_requested) n++;
    for (const cell of Object.values(row.evals)) if (!ENDED.has(cell.status)) n++;
  }
  return n;
}

export function bestOf(values: (number | null | undefined)[]): number | null {
  const f = values.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
  return f.length ? Math.max(...f) : null;
}

// ----------------------------------------------------------------- the leaderboard

/** A config difference as a compact chip: the key's last two parts and a short value. */
export function chipText(key: string, value: unknown): string {
  const parts = key.split(".");
  const k = parts.length > 2 ? parts.slice(-2).join(".") : key;
  let v: string;
  if (typeof value === "number")
    v =
      Number.isInteger(value) || (Math.abs(value) >= 1e-3 && Math.abs(value) < 1e5)
        ? String(Number(value.toPrecision(4)))
        : value.toExponential(1).replace(".0e", "e");
  else if (typeof value === "string") v = value;
  else v = JSON.stringify(value);
  if (v.length > 24) v = `${v.slice(0, 23)}…`;
  return `${k}=${v}`;
}

/**
 * The config keys of a leaderboard table in display order: first those whose values differ between its
 * rows (what tells the models apart), then those every row shares (the preset's common ground).
 */
export function chipOrder(configs: Record<string, unknown>[]): {
  varying: Set<string>;
  order: (c: Record<string, unknown>) => string[];
} {
  const keys = new Set<string>();
  configs.forEach((c) => Object.keys(c).forEach((k) => keys.add(k)));
  const varying = new Set<string>();
  for (const k of keys) {
    const vals = configs.map((c) => (k in c ? JSON.stringify(c[k]) : "\u0000absent"));
    if (vals.some((v) => v !== vals[0])) varying.add(k);
  }
  const order = (c: Record<string, unknown>) =>
    Object.keys(c).sort((a, b) => Number(varying.has(b)) - Number(varying.has(a)) || a.localeCompare(b));
  return { varying, order };
}
