import { describe, expect, it } from "vitest";
import { resourcesLabel, resourcesOf } from "./resources";

describe("resourcesOf", () => {
  it("sends nothing for one GPU, and machines x GPUs otherwise", () => {
    expect(resourcesOf("pretrain", "1", "1")).toEqual({ errors: {} });
    expect(resourcesOf("pretrain", "", " ")).toEqual({ errors: {} });
    expect(resourcesOf("pretrain", "4", "1")).toEqual({ resources: { nodes: 1, gpus_per_node: 4 }, errors: {} });
    expect(resourcesOf("pretrain", " 8 ", "2")).toEqual({ resources: { nodes: 2, gpus_per_node: 8 }, errors: {} });
  });
  it("names the field of a bad count", () => {
    expect(resourcesOf("pretrain", "0", "1").errors).toEqual({ "resources.gpus_per_node": "a whole number 1-64" });
    expect(resourcesOf("pretrain", "65", "2.5").errors).toEqual({
      "resources.gpus_per_node": "a whole number 1-64",
      "resources.nodes": "a whole number 1-256",
    });
    expect(resourcesOf("pretrain", "2", "-1").resources).toBeUndefined();
  });
  it("gives an evaluation one GPU whatever the fields say", () => {
    expect(resourcesOf("knn", "8", "0")).toEqual({ errors: {} });
  });
});

describe("a run's size and placement", () => {
  it("says how many GPUs on how many machines", () => {
    expect(resourcesLabel({ nodes: 1, gpus_per_node: 1 })).toBe("1 GPU");
    expect(resourcesLabel({ nodes: 1, gpus_per_node: 4 })).toBe("4 GPUs");
    expect(resourcesLabel({ nodes: 2, gpus_per_node: 4 })).toBe("2x4 GPUs");
    expect(resourcesLabel({ nodes: 3, gpus_per_node: 1 })).toBe("3x1 GPUs");
  });
});
