import { describe, expect, it } from "vitest";
import { groupKeys } from "./groups";

describe("groupKeys", () => {
  it("puts patch projection and last block on one chart and orders the paper's signals first", () => {
    const g = groupKeys([
      "nonfinite",
      "knn_top1",
      "grad_norm/last_block",
      "grad_norm",
      "grad_norm/patch_proj",
      "lr",
      "loss",
      "momentum",
      "imgs_per_s",
      "grad_norm/first_block",
      "gpu/util",
      "gpu/mem",
    ]);
    expect(g.map((x) => x.id)).toEqual([
      "loss",
      "lr",
      "momentum",
      "grad_norm",
      "grad_norm-other",
      "knn_top1",
      "throughput",
      "gpu",
      "nonfinite",
    ]);
    expect(g.find((x) => x.id === "grad_norm")!.keys).toEqual(["grad_norm/patch_proj", "grad_norm/last_block"]);
    expect(g.find((x) => x.id === "gpu")!.keys).toEqual(["gpu/mem", "gpu/util"]);
    expect(g.find((x) => x.id === "knn_top1")!.yRange).toEqual([0, 100]);
  });
});
