// The submit form, derived from the engine's JSON Schema (GET /api/v1/schema/{kind}): one field per leaf
// of the config tree, addressed by its dotted path. Pure functions, so that the form's logic is tested
// without a browser: fields from a schema, text from values and back, the overrides (changed fields
// only) and the API's 422 `loc` paths mapped onto fields.
import type { ValidationItem } from "../api/types";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type Schema = Record<string, unknown>;

export type FieldType = "number" | "integer" | "boolean" | "string" | "enum" | "array" | "json";

export interface FieldDef {
  path: string;
  section: string;
  title: string;
  description: string;
  type: FieldType;
  nullable: boolean;
  options: string[];
  /** The enum's values as the schema has them (options are their text): `"auto" | true | false` stays typed. */
  values: Json[];
  default: Json;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
}

function deref(root: Schema, node: Schema): Schema {
  let n = node;
  for (let i = 0; i < 16 && typeof n.$ref === "string"; i++) {
    const parts = (n.$ref as string).replace(/^#\//, "").split("/");
    let t: unknown = root;
    for (const p of parts) t = (t as Record<string, unknown>)?.[p];
    n = { ...(t as Schema), ...Object.fromEntries(Object.entries(n).filter(([k]) => k !== "$ref")) };
  }
  return n;
}

/** A node without its `null` alternative (pydantic's `X | None`), and whether it had one. */
function unwrapNullable(root: Schema, node: Schema): { node: Schema; nullable: boolean } {
  const n = deref(root, node);
  const alts = (n.anyOf ?? n.oneOf) as Schema[] | undefined;
  if (Array.isArray(alts)) {
    const nonNull = alts.filter((a) => a.type !== "null");
    const nullable = nonNull.length < alts.length;
    if (nonNull.length === 1) {
      const inner = deref(root, nonNull[0]);
      const merged: Schema = { ...inner };
      for (const k of ["default", "title", "description"]) if (k in n) merged[k] = n[k];
      return { node: merged, nullable };
    }
    return { node: n, nullable };
  }
  if (Array.isArray(n.type) && (n.type as string[]).includes("null")) {
    const types = (n.type as string[]).filter((t) => t !== "null");
    return { node: { ...n, type: types.length === 1 ? types[0] : types }, nullable: true };
  }
  return { node: n, nullable: false };
}

const human = (key: string) => key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

/** The leaves of a config schema, depth first in the schema's order; `const` fields (kind, framework) left out. */
export function fieldsOf(root: Schema): FieldDef[] {
  const out: FieldDef[] = [];
  const walk = (node: Schema, prefix: string, section: string, parentDefault: Json | undefined) => {
    const props = (node.properties ?? {}) as Record<string, Schema>;
    for (const [key, raw] of Object.entries(props)) {
      const path = prefix ? `${prefix}.${key}` : key;
      const { node: n, nullable } = unwrapNullable(root, raw);
      if ("const" in n) continue;
      const fromParent =
        parentDefault && typeof parentDefault === "object" && !Array.isArray(parentDefault)
          ? (parentDefault as Record<string, Json>)[key]
          : undefined;
      const dflt: Json | undefined = "default" in n ? (n.default as Json) : fromParent;
      if (n.type === "object" || n.properties) {
        walk(n, path, prefix ? section : key, dflt ?? undefined);
        continue;
      }
      let type: FieldType = "json";
      if (Array.isArray(n.enum)) type = "enum";
      else if (n.type === "number") type = "number";
      else if (n.type === "integer") type = "integer";
      else if (n.type === "boolean") type = "boolean";
      else if (n.type === "string") type = "string";
      else if (n.type === "array") type = "array";
      out.push({
        path,
        section: prefix ? section : "general",
        title: (n.title as string) || human(key),
        description: (n.description as string) || "",
        type,
        nullable,
        options: Array.isArray(n.enum) ? (n.enum as unknown[]).map(String) : [],
        values: Array.isArray(n.enum) ? (n.enum as Json[]) : [],
        default: dflt === undefined ? null : dflt,
        minimum: n.minimum as number | undefined,
        maximum: n.maximum as number | undefined,
        exclusiveMinimum: n.exclusiveMinimum as number | undefined,
        exclusiveMaximum: n.exclusiveMaximum as number | undefined,
      });
    }
  };
  walk(root, "", "general", undefined);
  return out;
}

/** A nested tree flattened to dotted keys ({optim: {base_lr: 1}} -> {"optim.base_lr": 1}). */
export function flatten(
  tree: Record<string, unknown>,
  prefix = "",
  out: Record<string, unknown> = {},
): Record<string, unknown> {
  for (const [k, v] of Object.entries(tree)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v as Record<string, unknown>, path, out);
    else out[path] = v;
  }
  return out;
}

/** Values of every field: schema defaults, then each layer (a preset's tree, a run's spec) on top. */
export function valuesOf(fields: FieldDef[], ...layers: Record<string, unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) out[f.path] = f.default;
  for (const layer of layers) {
    const flat = flatten(layer);
    for (const f of fields) if (f.path in flat) out[f.path] = flat[f.path];
  }
  return out;
}

/** How a value is written in its input. */
export function toText(f: FieldDef, v: unknown): string {
  if (v === null || v === undefined) return "";
  if (f.type === "array" || f.type === "json" || typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

/** An input's text back to a value, with the checks the browser can make itself. */
export function parseText(f: FieldDef, text: string): Parsed {
  const t = text.trim();
  if (f.type === "boolean") return { ok: true, value: t === "true" };
  if (t === "")
    return f.nullable
      ? { ok: true, value: null }
      : f.type === "string"
        ? { ok: true, value: "" }
        : { ok: false, error: "required" };
  if (f.type === "number" || f.type === "integer") {
    const n = Number(t);
    if (!Number.isFinite(n)) return { ok: false, error: "not a number" };
    if (f.type === "integer" && !Number.isInteger(n)) return { ok: false, error: "must be a whole number" };
    if (f.minimum !== undefined && n < f.minimum) return { ok: false, error: `must be ≥ ${f.minimum}` };
    if (f.maximum !== undefined && n > f.maximum) return { ok: false, error: `must be ≤ ${f.maximum}` };
    if (f.exclusiveMinimum !== undefined && n <= f.exclusiveMinimum)
      return { ok: false, error: `must be > ${f.exclusiveMinimum}` };
    if (f.exclusiveMaximum !== undefined && n >= f.exclusiveMaximum)
      return { ok: false, error: `must be < ${f.exclusiveMaximum}` };
    return { ok: true, value: n };
  }
  if (f.type === "enum") {
    const i = f.options.indexOf(t);
    return i >= 0 ? { ok: true, value: f.values[i] ?? t } : { ok: false, error: `one of ${f.options.join(", ")}` };
  }
  if (f.type === "string") return { ok: true, value: text };
  if (f.type === "array" && !t.startsWith("[")) {
    const items = t.split(",").map((x) => Number(x.trim()));
    if (items.some((x) => !Number.isFinite(x))) return { ok: false, error: "a list of numbers, e.g. 0.1, 2.0" };
    return { ok: true, value: items };
  }
  try {
    return { ok: true, value: JSON.parse(t) };
  } catch {
    return { ok: false, error: "not valid JSON" };
  }
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/**
 * The overrides to send: dotted keys of the fields whose value differs from `base` (the schema defaults
 * with the chosen preset applied). Fields whose text does not parse are returned as errors instead.
 */
export function overridesOf(
  fields: FieldDef[],
  base: Record<string, unknown>,
  texts: Record<string, string>,
): { overrides: Record<string, unknown>; errors: Record<string, string> } {
  const overrides: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const f of fields) {
    if (!(f.path in texts)) continue;
    const baseText = toText(f, base[f.path]);
    if (texts[f.path] === baseText) continue; // untouched
    const p = parseText(f, texts[f.path]);
    if (!p.ok) {
      errors[f.path] = p.error;
      continue;
    }
    if (!same(p.value, base[f.path])) overrides[f.path] = p.value;
  }
  return { overrides, errors };
}

/**
 * The API's 422 detail ({loc, msg} items) by field: `loc` is ["body", "spec" | "overrides", ...path] (or a
 * dotted key as one element); each item goes to the field whose path is the longest prefix of its own
 * ("augment.jitter.2" -> augment.jitter). Items that match no field are returned under "" (shown atop).
 */
export function errorsByField(detail: ValidationItem[], fieldPaths: string[]): Record<string, string> {
  const known = new Set(fieldPaths);
  const out: Record<string, string> = {};
  const add = (key: string, msg: string) => {
    out[key] = out[key] ? `${out[key]}; ${msg}` : msg;
  };
  for (const item of detail) {
    const loc = (item.loc ?? []).map(String);
    let rest = loc[0] === "body" ? loc.slice(1) : loc;
    if (rest[0] === "spec" || rest[0] === "overrides") rest = rest.slice(1);
    const parts = rest.flatMap((p) => p.split("."));
    let match = "";
    for (let n = parts.length; n > 0; n--) {
      const cand = parts.slice(0, n).join(".");
      if (known.has(cand)) {
        match = cand;
        break;
      }
    }
    if (match) add(match, item.msg);
    else add("", parts.length ? `${parts.join(".")}: ${item.msg}` : item.msg);
  }
  return out;
}

/** Group fields by section for display, keeping the schema's order. */
export function sections(fields: FieldDef[]): [string, FieldDef[]][] {
  const m = new Map<string, FieldDef[]>();
  for (const f of fields) {
    if (!m.has(f.section)) m.set(f.section, []);
    m.get(f.section)!.push(f);
  }
  return Array.from(m.entries());
}
