// The charts of one run: the downsampled series per chart group, the live points merged into them once
// per animation frame, and zoom (a step range refetched at finer resolution). Live points that arrive
// while a group is being fetched wait and are merged after it (duplicates drop by step).
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api/client";
import { groupKeys, type ChartGroup } from "./groups";
import { fromResponse, mergeLive, truncateSeries, type Geometry, type LivePoint, type Series } from "./series";

export interface GroupState {
  group: ChartGroup;
  geometry: Geometry;
  series: Map<string, Series>;
  zoom: [number, number] | null;
  fetching: boolean;
  error: string | null;
  pending: Map<string, LivePoint[]>;
}

export const DEFAULT_BUCKETS = 600;

export function useRunCharts(runId: string, buckets: number) {
  const store = useRef<{
    groups: GroupState[];
    keys: Set<string>;
    ready: boolean;
    error: unknown;
    buffer: Map<string, LivePoint[]>;
    frame: number | null;
  }>({ groups: [], keys: new Set(), ready: false, error: null, buffer: new Map(), frame: null });
  const [, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const bucketsRef = useRef(buckets);
  bucketsRef.current = buckets;

  const regroup = (keys: string[]) => {
    const s = store.current;
    keys.forEach((k) => s.keys.add(k));
    const groups = groupKeys(Array.from(s.keys));
    const old = new Map(s.groups.map((g) => [g.group.id, g]));
    s.groups = groups.map((group) => {
      const prev = old.get(group.id);
      if (prev) return { ...prev, group };
      return {
        group,
        geometry: { start: null, width: 1 },
        series: new Map(),
        zoom: null,
        fetching: false,
        error: null,
        pending: new Map(),
      };
    });
  };

  const load = async (signal: AbortSignal) => {
    const s = store.current;
    try {
      const keys = await api.metricKeys(runId, signal);
      regroup(keys);
      s.groups.forEach((g) => (g.fetching = true));
      bump();
      if (keys.length) {
        const res = await api.metrics(runId, { keys, buckets: bucketsRef.current }, signal);
        const { geometry, series } = fromResponse(res);
        for (const g of s.groups) {
          g.geometry = geometry;
          g.series = new Map(g.group.keys.map((k) => [k, series.get(k)!]).filter(([, v]) => v) as [string, Series][]);
        }
      }
      s.groups.forEach((g) => (g.fetching = false));
      s.ready = true;
      flush();
    } catch (e) {
      if ((e as Error).name === "AbortError") return;
      s.error = e;
      s.ready = true;
      bump();
    }
  };

  const flush = () => {
    const s = store.current;
    s.frame = null;
    const buffer = s.buffer;
    s.buffer = new Map();
    const unknown = Array.from(buffer.keys()).filter((k) => !s.keys.has(k));
    if (unknown.length) regroup(unknown);
    const maxBuckets = Math.max(50, bucketsRef.current * 2);
    for (const g of s.groups) {
      const mine = new Map<string, LivePoint[]>();
      for (const k of g.group.keys) {
        const pts = [...(g.pending.get(k) ?? []), ...(buffer.get(k) ?? [])];
        if (pts.length) mine.set(k, pts);
      }
      if (!mine.size) continue;
      if (g.fetching || !s.ready) {
        g.pending = mine;
        continue;
      }
      g.pending = new Map();
      if (g.zoom) continue; // a zoomed view is a fixed range; reset zoom refetches with everything
      const next = mergeLive({ geometry: g.geometry, series: g.series }, mine, maxBuckets);
      g.geometry = next.geometry;
      g.series = next.series;
    }
    bump();
  };

  useEffect(() => {
    const ctrl = new AbortController();
    void load(ctrl.signal);
    return () => {
      ctrl.abort();
      const f = store.current.frame;
      if (f !== null) cancelAnimationFrame(f);
    };
  }, [runId]);

  /** A `metrics` event's points (by key), drawn on the next animation frame. */
  const push = (points: Map<string, LivePoint>) => {
    const s = store.current;
    for (const [k, p] of points) {
      if (!s.buffer.has(k)) s.buffer.set(k, []);
      s.buffer.get(k)!.push(p);
    }
    if (s.frame === null) s.frame = requestAnimationFrame(flush);
  };

  const fetchRange = async (id: string, range: [number, number] | null) => {
    const g = store.current.groups.find((x) => x.group.id === id);
    if (!g) return;
    g.fetching = true;
    g.error = null;
    bump();
    try {
      const res = await api.metrics(runId, {
        keys: g.group.keys,
        buckets: bucketsRef.current,
        start: range?.[0],
        end: range?.[1],
      });
      const { geometry, series } = fromResponse(res);
      g.geometry = geometry;
      g.series = series;
      g.zoom = range;
    } catch (e) {
      g.error = (e as Error).message;
    }
    g.fetching = false;
    flush();
  };

  /**
   * A rollback to the checkpoint at `step`: every chart is cut back to that step, so that the replayed steps that
   * follow are drawn (the abandoned curve stays on the server as the run's branch, drawn by the compare page).
   */
  const rollback = (step: number) => {
    const st = store.current;
    for (const g of st.groups) {
      const next = new Map<string, Series>();
      for (const [k, ser] of g.series) next.set(k, truncateSeries(ser, step));
      g.series = next;
      for (const [k, pts] of g.pending)
        g.pending.set(
          k,
          pts.filter((p) => p.step <= step),
        );
    }
    // live points not drawn yet came before the rollback event: those past the step were abandoned too
    for (const [k, pts] of st.buffer)
      st.buffer.set(
        k,
        pts.filter((p) => p.step <= step),
      );
    bump();
  };

  const s = store.current;
  return {
    rollback,
    ready: s.ready,
    error: s.error,
    groups: s.groups,
    push,
    zoom: (id: string, lo: number, hi: number) => void fetchRange(id, [lo, hi]),
    resetZoom: (id: string) => void fetchRange(id, null),
  };
}
