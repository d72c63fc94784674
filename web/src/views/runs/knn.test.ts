import { describe, expect, it } from "vitest";
import { knnEvalCell, knnProbeCell } from "./knn";

describe("knnProbeCell", () => {
  it("shows the probe's latest top-1 with its step", () => {
    expect(knnProbeCell({ knn_probe_top1: 35, knn_probe_step: 2 }).text).toBe("35.00 (step 2)");
    expect(knnProbeCell({ knn_probe_top1: 0, knn_probe_step: 0 }).text).toBe("0.00 (step 0)");
  });
  it("marks a NaN probe, and a run without one", () => {
    expect(knnProbeCell({ knn_probe_top1: null, knn_probe_step: 7 }).text).toBe("NaN (step 7)");
    expect(knnProbeCell({ knn_probe_top1: null, knn_probe_step: null }).text).toBe("—");
    expect(knnProbeCell({}).text).toBe("—");
  });
});

describe("knnEvalCell", () => {
  it("shows the evaluation's top-1, never the probe's", () => {
    expect(knnEvalCell({ kind: "pretrain", knn_eval_top1: 61.5 })).toEqual({
      text: "61.50",
      title: "best kNN evaluation top-1",
    });
    expect(knnEvalCell({ kind: "knn", knn_eval_top1: 61.5 }).title).toBe("this kNN evaluation's top-1");
    expect(knnEvalCell({ kind: "pretrain", knn_eval_top1: null }).text).toBe("—");
    expect(knnEvalCell({ kind: "linear" }).text).toBe("—");
  });
});
