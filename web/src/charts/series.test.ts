import { describe, expect, it } from "vitest";
import {
  align,
  fromResponse,
  mergeLive,
  mergePoints,
  parseValue,
  pointsOfPayload,
  positiveOnly,
  rebucket,
  truncateSeries,
  type Series,
} from "./series";

// The server cut steps [0, 99] into buckets of width 10: last, min, max per bucket.
const wire = () =>
  fromResponse({
    run_id: "r",
    buckets: 10,
    bucket_width: 10,
    start: 0,
    end: 99,
    truncated: false,
    series: [{ key: "loss", step: [9, 19], value: [2, 1.5], min: [1.9, 1.4], max: [2.5, 1.8], count: [10, 10] }],
  });

describe("mergePoints", () => {
  it("merges a live point into the last bucket and keeps a spike as its max", () => {
    const { geometry, series } = wire();
    const s0 = series.get("loss")!;
    const s1 = mergePoints({ ...s0, step: [9, 15], count: [10, 6] }, geometry, [
      { step: 16, value: 40 },
      { step: 17, value: 1.2 },
    ]);
    expect(s1.step).toEqual([9, 17]);
    expect(s1.value).toEqual([2, 1.2]); // last
    expect(s1.max[1]).toBe(40); // the spike survives although the last value is low again
    expect(s1.min[1]).toBe(1.2);
    expect(s1.count[1]).toBe(8);
  });

  it("appends a new bucket for a step past the last bucket", () => {
    const { geometry, series } = wire();
    const s = mergePoints(series.get("loss")!, geometry, [
      { step: 20, value: 1.1 },
      { step: 35, value: 0.9 },
    ]);
    expect(s.step).toEqual([9, 19, 20, 35]);
    expect(s.value).toEqual([2, 1.5, 1.1, 0.9]);
    expect(s.min.slice(2)).toEqual([1.1, 0.9]);
    expect(s.count.slice(2)).toEqual([1, 1]);
  });

  it("ignores duplicate and out-of-order points and leaves the input untouched", () => {
    const { geometry, series } = wire();
    const s0 = series.get("loss")!;
    const frozen = JSON.stringify(s0);
    expect(
      mergePoints(s0, geometry, [
        { step: 19, value: 99 },
        { step: 3, value: -5 },
      ]),
    ).toBe(s0);
    const s1 = mergePoints(s0, geometry, [
      { step: 21, value: 1 },
      { step: 21, value: 50 },
      { step: 20, value: 60 },
    ]);
    expect(s1.step).toEqual([9, 19, 21]);
    expect(s1.max[2]).toBe(1);
    expect(JSON.stringify(s0)).toBe(frozen);
  });

  it("keeps non-finite values: 'nan' and 'inf' strings become NaN/Infinity, shown as markers", () => {
    const { geometry, series } = wire();
    const s = mergePoints(series.get("loss")!, geometry, [
      { step: 25, value: "nan" },
      { step: 31, value: "inf" },
    ]);
    expect(Number.isNaN(s.value[2])).toBe(true);
    expect(s.value[3]).toBe(Infinity);
    const a = align([s]);
    expect(a.cols[0].value).toEqual([2, 1.5, null, null]);
    expect(a.nonFinite.map((m) => m.step)).toEqual([25, 31]);
    expect(a.points).toBe(4);
  });
});

describe("mergeLive", () => {
  it("starts the geometry of an empty chart at the first live step, and re-cuts past maxBuckets", () => {
    let state: { geometry: { start: number | null; width: number }; series: Map<string, Series> } = {
      geometry: { start: null, width: 1 },
      series: new Map(),
    };
    for (let step = 100; step < 110; step++) {
      state = mergeLive(state, new Map([["loss", [{ step, value: step === 104 ? 1000 : 1 }]]]), 4);
    }
    expect(state.geometry.start).toBe(100);
    expect(state.geometry.width).toBe(4);
    const s = state.series.get("loss")!;
    expect(s.step).toEqual([103, 107, 109]);
    expect(s.max).toEqual([1, 1000, 1]);
    expect(s.count).toEqual([4, 4, 2]);
  });

  it("returns the same state when nothing is new", () => {
    const st = wire();
    expect(mergeLive(st, new Map([["loss", [{ step: 5, value: 1 }]]]), 100)).toBe(st);
  });
});

describe("helpers", () => {
  it("parseValue", () => {
    expect(parseValue("-inf")).toBe(-Infinity);
    expect(parseValue(3)).toBe(3);
    expect(Number.isNaN(parseValue("nan"))).toBe(true);
  });
  it("rebucket keeps min and max over merged buckets", () => {
    const s: Series = {
      key: "k",
      step: [0, 1, 2, 3],
      value: [1, 2, 3, 4],
      min: [1, 2, 3, 4],
      max: [1, 9, 3, 4],
      count: [1, 1, 1, 1],
    };
    const r = rebucket(s, { start: 0, width: 1 }, 2);
    expect(r).toEqual({ key: "k", step: [1, 3], value: [2, 4], min: [1, 3], max: [9, 4], count: [2, 2] });
  });
  it("align joins series with different steps", () => {
    const a: Series = { key: "a", step: [1, 3], value: [1, 3], min: [1, 3], max: [1, 3], count: [1, 1] };
    const b: Series = { key: "b", step: [2, 3], value: [5, 6], min: [5, 6], max: [5, 6], count: [1, 1] };
    const r = align([a, b]);
    expect(r.x).toEqual([1, 2, 3]);
    expect(r.cols[0].value).toEqual([1, null, 3]);
    expect(r.cols[1].value).toEqual([null, 5, 6]);
  });
  it("pointsOfPayload reads a metrics event", () => {
    const p = pointsOfPayload({ step: 7, values: { loss: 1.5, "grad_norm/patch_proj": "inf" } });
    expect(p.get("grad_norm/patch_proj")).toEqual({ step: 7, value: "inf" });
    expect(p.get("loss")).toEqual({ step: 7, value: 1.5 });
  });
});

describe("NaN inside a bucket (the server's nan counts)", () => {
  const withNan = () =>
    fromResponse({
      run_id: "r",
      buckets: 10,
      bucket_width: 10,
      start: 0,
      end: 99,
      truncated: false,
      series: [
        { key: "loss", step: [9, 19], value: [2, 1.5], min: [1.9, 1.4], max: [2.5, 1.8], count: [10, 10], nan: [0, 2] },
      ],
    });

  it("marks a bucket whose last value is finite but which held a NaN", () => {
    const { series } = withNan();
    expect(align([series.get("loss")!]).nonFinite).toEqual([{ series: 0, step: 19, value: NaN }]);
    expect(align([wire().series.get("loss")!]).nonFinite).toEqual([]); // no counts: nothing to mark
  });

  it("keeps the count through live merges and re-bucketing, and counts NaNs merged live", () => {
    const { geometry, series } = wire();
    let s = mergePoints(series.get("loss")!, geometry, [
      { step: 19.5, value: "nan" },
      { step: 19.7, value: 1.3 },
    ]);
    expect(s.nan).toEqual([0, 1]);
    expect(align([s]).nonFinite.map((n) => n.step)).toEqual([19.7]);
    s = mergePoints(s, geometry, [{ step: 25, value: 1 }]);
    expect(s.nan).toEqual([0, 1, 0]);
    expect(rebucket(s, geometry, 20).nan).toEqual([1, 0]);
  });
});

describe("truncateSeries (a rollback)", () => {
  it("cuts back to the checkpoint's step so that the replayed steps are drawn, not dropped as duplicates", () => {
    const g = { start: 0, width: 1 };
    let s: Series = {
      key: "loss",
      step: [1, 2, 3, 4, 5],
      value: [5, 4, 3, 9, "nan" as unknown as number].map(Number),
      min: [5, 4, 3, 9, NaN],
      max: [5, 4, 3, 9, NaN],
      count: [1, 1, 1, 1, 1],
      nan: [0, 0, 0, 0, 1],
    };
    // before the cut a replayed step 4 is a duplicate
    expect(mergePoints(s, g, [{ step: 4, value: 2.5 }])).toBe(s);
    const cut = truncateSeries(s, 3);
    expect(cut.step).toEqual([1, 2, 3]);
    expect(cut.nan).toEqual([0, 0, 0]);
    expect(s.step).toHaveLength(5); // pure
    s = mergePoints(cut, g, [
      { step: 4, value: 2.5 },
      { step: 5, value: 2.4 },
    ]);
    expect(s.step).toEqual([1, 2, 3, 4, 5]);
    expect(s.value).toEqual([5, 4, 3, 2.5, 2.4]);
  });

  it("drops a bucket that straddles the step whole, and returns the same series when nothing is past it", () => {
    const s = wire().series.get("loss")!; // buckets ending at 9 and 19
    expect(truncateSeries(s, 15).step).toEqual([9]);
    expect(truncateSeries(s, 19)).toBe(s);
    expect(truncateSeries(s, 3).step).toEqual([]);
  });
});

describe("positiveOnly (a log axis)", () => {
  it("turns values at or below zero into gaps and keeps the rest", () => {
    expect(positiveOnly([0, 1e-6, -2, null, 3])).toEqual([null, 1e-6, null, null, 3]);
  });
});
