import { describe, expect, it } from "vitest";
import type { DatasetPublic } from "../../api/types";
import type { RunDetail } from "../../api/types";
import {
  clonedDataset,
  datasetChoices,
  datasetFacts,
  datasetOverride,
  impliedDataset,
  replacedByDataset,
} from "./dataset";

const ds = (name: string, status: DatasetPublic["status"], extra: Partial<DatasetPublic> = {}) =>
  ({ name, status, splits: null, classes: null, num_classes: null, ...extra }) as DatasetPublic;

describe("the dataset the form starts on", () => {
  it("is fashion-mnist when the preset reads Debian's Fashion-MNIST, else none", () => {
    expect(impliedDataset({ "data.dataset": "fashion_mnist", "data.root": null })).toBe("fashion-mnist");
    expect(impliedDataset({ "data.dataset": "fashion_mnist", "data.root": "/elsewhere" })).toBe("");
    expect(impliedDataset({ "data.dataset": "imagefolder", "data.root": null })).toBe("");
    expect(impliedDataset({ "data.name": "imagenet", "data.dataset": "fashion_mnist" })).toBe("imagenet");
  });

  it("is a cloned run's: what it was submitted with, else its spec's", () => {
    const run = (overrides: unknown, spec: unknown) => ({ overrides, spec }) as unknown as RunDetail;
    expect(clonedDataset(run({ "data.name": "imagenet" }, {}))).toBe("imagenet");
    expect(clonedDataset(run({ data: { name: "cifar" } }, {}))).toBe("cifar");
    // submitted without one: the spec's resolved name does not count, the preset's data stands
    expect(clonedDataset(run({ "train.max_steps": 5 }, { data: { name: "imagenet" } }))).toBeNull();
    expect(clonedDataset(run(null, { data: { name: "imagenet", root: "/p" } }))).toBe("imagenet");
    expect(clonedDataset(run(null, { data: { name: null } }))).toBeNull();
  });
});

describe("what the choice sends", () => {
  it("sends data.name only when it changes what the run reads", () => {
    expect(datasetOverride("fashion-mnist", "fashion-mnist")).toEqual({});
    expect(datasetOverride("", "fashion-mnist")).toEqual({});
    expect(datasetOverride("imagenet", "fashion-mnist")).toEqual({ "data.name": "imagenet" });
    expect(datasetOverride("fashion-mnist", "")).toEqual({ "data.name": "fashion-mnist" });
  });

  it("says which typed data fields a chosen dataset replaces", () => {
    const o = { "data.root": "/data/x", "data.crop_size": 64, "data.mean": [0.5, 0.5, 0.5] };
    expect(replacedByDataset(o, true)).toEqual(["data.root"]); // a typed mean is kept
    expect(replacedByDataset({ ...o, "data.dataset": "imagefolder" }, true)).toEqual(["data.dataset", "data.root"]);
    expect(replacedByDataset(o, false)).toEqual([]);
  });
});

describe("the datasets offered", () => {
  it("lists the ready ones by name", () => {
    const all = [ds("zoo", "ready"), ds("imagenet", "scanning"), ds("broken", "failed"), ds("fashion-mnist", "ready")];
    expect(datasetChoices(all).map((d) => d.name)).toEqual(["fashion-mnist", "zoo"]);
  });

  it("says its images and classes beside the select", () => {
    const d = ds("imagenet", "ready", {
      splits: { train: { images: 1281167 }, val: { images: 50000 } },
      num_classes: 1000,
    });
    expect(datasetFacts(d)).toBe("1,331,167 images · 1,000 classes");
    expect(datasetFacts(ds("one", "ready", { splits: { train: { images: 3 } }, classes: ["a"] }))).toBe(
      "3 images · 1 class",
    );
    expect(datasetFacts(ds("x", "ready"))).toBe("");
  });
});
