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

  it("charts the earlier signals after kNN: update ratios and feature std on a log scale, layers in order", () => {
    const g = groupKeys([
      "loss",
      "update_ratio/heads",
      "update_ratio/last_block",
      "update_ratio/patch_proj",
      "update_ratio/first_block",
      "attn_entropy/last_block",
      "attn_entropy/first_block",
      "feat_std",
      "rankme",
      "knn_top1",
      "imgs_per_s",
    ]);
    expect(g.map((x) => x.id)).toEqual([
      "loss",
      "knn_top1",
      "update_ratio",
      "attn_entropy",
      "rankme",
      "feat_std",
      "throughput",
    ]);
    const by = (id: string) => g.find((x) => x.id === id)!;
    expect(by("update_ratio").keys).toEqual([
      "update_ratio/patch_proj",
      "update_ratio/first_block",
      "update_ratio/last_block",
      "update_ratio/heads",
    ]);
    expect(by("attn_entropy").keys).toEqual(["attn_entropy/first_block", "attn_entropy/last_block"]);
    expect(by("update_ratio").logY).toBe(true);
    expect(by("feat_std").logY).toBe(true);
    // rank and entropy are read on a linear axis; so is everything that was before
    expect(by("rankme").logY).toBeFalsy();
    expect(by("attn_entropy").logY).toBeFalsy();
    expect(by("loss").logY).toBeFalsy();
    expect(by("update_ratio").title).toMatch(/Update-to-weight ratio/);
    expect(by("rankme").title).toMatch(/RankMe/);
  });

  it("puts an update-ratio group it does not know after the known ones", () => {
    const g = groupKeys(["update_ratio/zz_new", "update_ratio/patch_proj", "rankme"]);
    expect(g.find((x) => x.id === "update_ratio")!.keys).toEqual(["update_ratio/patch_proj", "update_ratio/zz_new"]);
    expect(g.find((x) => x.id === "rankme")!.keys).toEqual(["rankme"]);
  });
});
