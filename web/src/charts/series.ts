// Metric series as the charts hold them, and the pure functions that keep them current:
// the server's downsampled buckets (min, max, last) are merged with live points without ever
// losing a spike, and non-finite values ('nan', 'inf') stay visible instead of being dropped.
import type { MetricSeriesWire, RunMetrics, WireValue } from "../api/types";

/** One key's buckets, columnar. `step`/`value` are each bucket's last point; min/max its range. */
export interface Series {
  key: string;
  step: number[];
  value: number[];
  min: number[];
  max: number[];
  count: number[];
  /** NaN points per bucket, when known (the server's `nan`, or a NaN merged live): a NaN inside a bucket whose
   * last value is finite still gets its marker. */
  nan?: number[];
}

/** Bucket edges shared by every key of a chart: bucket i holds steps [start + i*width, start + (i+1)*width). */
export interface Geometry {
  start: number | null;
  width: number;
}

export interface LivePoint {
  step: number;
  value: WireValue;
}

export function parseValue(v: WireValue | null | undefined): number {
  if (typeof v === "number") return v;
  if (v === null || v === undefined) return NaN;
  const s = String(v).trim().toLowerCase();
  if (s === "inf" || s === "+inf" || s === "infinity") return Infinity;
  if (s === "-inf" || s === "-infinity") return -Infinity;
  if (s === "nan" || s === "") return NaN;
  const n = Number(s);
  return Number.isNaN(n) ? NaN : n;
}

export const emptySeries = (key: string): Series => ({ key, step: [], value: [], min: [], max: [], count: [] });

export function seriesFromWire(w: MetricSeriesWire): Series {
  const value = w.value.map(parseValue);
  return {
    key: w.key,
    step: w.step.slice(),
    value,
    min: w.min ? w.min.map(parseValue) : value.slice(),
    max: w.max ? w.max.map(parseValue) : value.slice(),
    count: w.count ? w.count.slice() : value.map(() => 1),
    ...(Array.isArray(w.nan) && w.nan.length === value.length ? { nan: w.nan.slice() } : {}),
  };
}

/** The series' NaN counts, created (zeros) when absent. */
function nanOf(s: Series): number[] {
  if (!s.nan) s.nan = s.step.map(() => 0);
  return s.nan;
}

export function fromResponse(r: RunMetrics): { geometry: Geometry; series: Map<string, Series> } {
  const series = new Map<string, Series>();
  for (const w of r.series) series.set(w.key, seriesFromWire(w));
  return { geometry: { start: r.start, width: r.bucket_width ?? 1 }, series };
}

// min/max as SQL computes them: NaN (NULL there) never wins, ±inf does.
function lower(a: number, b: number): number {
  if (Number.isNaN(a)) return b;
  if (Number.isNaN(b)) return a;
  return Math.min(a, b);
}
function higher(a: number, b: number): number {
  if (Number.isNaN(a)) return b;
  if (Number.isNaN(b)) return a;
  return Math.max(a, b);
}

const bucketOf = (g: Geometry, step: number) => Math.floor((step - (g.start ?? 0)) / g.width);

/**
 * Merge live points into a series. Pure: returns a new series (or the same object when nothing changed).
 * A point at or before the series' last step is a duplicate or out of order and is ignored; a point in the
 * last bucket updates its last value, min, max and count; a point past it appends a new bucket.
 */
export function mergePoints(s: Series, g: Geometry, points: LivePoint[]): Series {
  let out: Series | null = null;
  for (const p of points) {
    const cur = out ?? s;
    const n = cur.step.length;
    const lastStep = n ? cur.step[n - 1] : -Infinity;
    if (!(p.step > lastStep)) continue;
    if (!out) {
      out = {
        key: s.key,
        step: s.step.slice(),
        value: s.value.slice(),
        min: s.min.slice(),
        max: s.max.slice(),
        count: s.count.slice(),
      };
      if (s.nan) out.nan = s.nan.slice();
    }
    const v = parseValue(p.value);
    const isNan = Number.isNaN(v) ? 1 : 0;
    if (n && g.start !== null && bucketOf(g, p.step) === bucketOf(g, lastStep)) {
      const i = n - 1;
      out.step[i] = p.step;
      out.value[i] = v;
      out.min[i] = lower(out.min[i], v);
      out.max[i] = higher(out.max[i], v);
      out.count[i] += 1;
      if (isNan || out.nan) nanOf(out)[i] += isNan;
    } else {
      if (isNan && !out.nan) nanOf(out);
      out.step.push(p.step);
      out.value.push(v);
      out.min.push(v);
      out.max.push(v);
      out.count.push(1);
      out.nan?.push(isNan);
    }
  }
  return out ?? s;
}

/** Re-cut a series into coarser buckets of `width` (a multiple of the old one) from the same start. */
export function rebucket(s: Series, g: Geometry, width: number): Series {
  const ng: Geometry = { start: g.start, width };
  const out = emptySeries(s.key);
  if (s.nan) out.nan = [];
  let last = NaN;
  for (let i = 0; i < s.step.length; i++) {
    const b = bucketOf(ng, s.step[i]);
    const j = out.step.length - 1;
    if (j >= 0 && b === last) {
      out.step[j] = s.step[i];
      out.value[j] = s.value[i];
      out.min[j] = lower(out.min[j], s.min[i]);
      out.max[j] = higher(out.max[j], s.max[i]);
      out.count[j] += s.count[i];
      if (out.nan && s.nan) out.nan[j] += s.nan[i];
    } else {
      out.step.push(s.step[i]);
      out.value.push(s.value[i]);
      out.min.push(s.min[i]);
      out.max.push(s.max[i]);
      out.count.push(s.count[i]);
      if (out.nan && s.nan) out.nan.push(s.nan[i]);
      last = b;
    }
  }
  return out;
}

/**
 * Live points for several keys at once, with the geometry kept: the first point fixes the start of a
 * chart that had no data, and when a series grows past `maxBuckets` every series is re-cut at double width
 * (so a chart never holds much more than its pixel width, however long the run).
 */
export function mergeLive(
  state: { geometry: Geometry; series: Map<string, Series> },
  points: Map<string, LivePoint[]>,
  maxBuckets: number,
): { geometry: Geometry; series: Map<string, Series> } {
  let geometry = state.geometry;
  if (geometry.start === null) {
    let first = Infinity;
    for (const ps of points.values()) for (const p of ps) first = Math.min(first, p.step);
    if (first === Infinity) return state;
    geometry = { start: first, width: geometry.width };
  }
  let series = state.series;
  let changed = geometry !== state.geometry;
  for (const [key, ps] of points) {
    const before = series.get(key) ?? emptySeries(key);
    const after = mergePoints(before, geometry, ps);
    if (after !== before || !series.has(key)) {
      if (series === state.series) series = new Map(series);
      series.set(key, after);
      changed = true;
    }
  }
  let longest = 0;
  for (const s of series.values()) longest = Math.max(longest, s.step.length);
  while (longest > maxBuckets) {
    const width = geometry.width * 2;
    const next = new Map<string, Series>();
    longest = 0;
    for (const [k, s] of series) {
      const r = rebucket(s, geometry, width);
      next.set(k, r);
      longest = Math.max(longest, r.step.length);
    }
    geometry = { start: geometry.start, width };
    series = next;
    changed = true;
  }
  return changed ? { geometry, series } : state;
}

const finiteOrNull = (v: number) => (Number.isFinite(v) ? v : null);

export interface Aligned {
  /** Shared x (steps), the union of every series' steps. */
  x: number[];
  /** Per input series: last value, min and max at each x (null where that series has no bucket there). */
  cols: { value: (number | null)[]; min: (number | null)[]; max: (number | null)[] }[];
  /** Buckets whose last value is not finite: drawn as markers. */
  nonFinite: { series: number; step: number; value: number }[];
  /** Buckets in all (what the chart draws). */
  points: number;
}

/** Align several series on one x axis for uPlot (columnar arrays, nulls for gaps). */
export function align(list: Series[]): Aligned {
  const xs = new Set<number>();
  for (const s of list) for (const st of s.step) xs.add(st);
  const x = Array.from(xs).sort((a, b) => a - b);
  const index = new Map<number, number>();
  x.forEach((st, i) => index.set(st, i));
  const nonFinite: Aligned["nonFinite"] = [];
  let points = 0;
  const cols = list.map((s, si) => {
    const value = new Array<number | null>(x.length).fill(null);
    const min = new Array<number | null>(x.length).fill(null);
    const max = new Array<number | null>(x.length).fill(null);
    for (let i = 0; i < s.step.length; i++) {
      const j = index.get(s.step[i])!;
      value[j] = finiteOrNull(s.value[i]);
      min[j] = finiteOrNull(s.min[i]);
      max[j] = finiteOrNull(s.max[i]);
      if (!Number.isFinite(s.value[i])) nonFinite.push({ series: si, step: s.step[i], value: s.value[i] });
      else if (!Number.isFinite(s.max[i]) && !Number.isNaN(s.max[i]))
        nonFinite.push({ series: si, step: s.step[i], value: s.max[i] });
      else if (!Number.isFinite(s.min[i]) && !Number.isNaN(s.min[i]))
        nonFinite.push({ series: si, step: s.step[i], value: s.min[i] });
      else if ((s.nan?.[i] ?? 0) > 0) nonFinite.push({ series: si, step: s.step[i], value: NaN });
    }
    points += s.step.length;
    return { value, min, max };
  });
  return { x, cols, nonFinite, points };
}

/** Live points of a `metrics` event payload ({step, values: {key: value}}), by key. */
export function pointsOfPayload(payload: Record<string, unknown>): Map<string, LivePoint> {
  const out = new Map<string, LivePoint>();
  const step = payload.step;
  const values = payload.values;
  if (typeof step !== "number" || !values || typeof values !== "object") return out;
  for (const [k, v] of Object.entries(values as Record<string, unknown>)) {
    if (typeof v === "number" || typeof v === "string") out.set(k, { step, value: v });
    else if (v === null) out.set(k, { step, value: "nan" });
  }
  return out;
}

/**
 * A series cut back to the buckets ending at or before `step` (a rollback: training restarts from the checkpoint
 * at that step, and the replayed steps must be drawn instead of being dropped as duplicates). A bucket that
 * straddles the step is dropped whole: its min/max mix both sides. Returns the same object when nothing is cut.
 */
export function truncateSeries(s: Series, step: number): Series {
  let n = s.step.length;
  while (n > 0 && s.step[n - 1] > step) n--;
  if (n === s.step.length) return s;
  const out: Series = {
    key: s.key,
    step: s.step.slice(0, n),
    value: s.value.slice(0, n),
    min: s.min.slice(0, n),
    max: s.max.slice(0, n),
    count: s.count.slice(0, n),
  };
  if (s.nan) out.nan = s.nan.slice(0, n);
  return out;
}

/** On a log axis a value at or below 0 has no place: it is drawn as a gap rather than breaking the scale. */
export function positiveOnly(col: (number | null)[]): (number | null)[] {
  return col.map((v) => (v !== null && v > 0 ? v : null));
}
