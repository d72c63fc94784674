import { describe, expect, it } from "vitest";
import type { CheckpointPublic, RunPublic } from "../../api/types";
import { checkpointSteps, moveCheckpointError, pretrainChoices, runLabel, sourceFields } from "./source";

const run = (id: string, status: RunPublic["status"], kind = "pretrain", extra: Partial<RunPublic> = {}) =>
  ({ id, status, kind, name: null, step: null, project: "default", ...extra }) as RunPublic;
const ckpt = (step: number) =>
  ({ run_id: "r", step, seq: step, time: 0, path: `p${step}`, healthy: true }) as CheckpointPublic;

describe("the pretraining runs offered", () => {
  it("keeps pretraining runs that may have a checkpoint, the succeeded first, in the API's order", () => {
    const runs = [
      run("a", "running"),
      run("b", "succeeded"),
      run("q", "queued"),
      run("e", "succeeded", "knn"),
      run("c", "failed"),
      run("d", "succeeded"),
    ];
    expect(pretrainChoices(runs).map((r) => r.id)).toEqual(["b", "d", "a", "c"]);
  });

  it("labels a run by name (or id), status and step", () => {
    expect(runLabel(run("r1", "succeeded", "pretrain", { name: "tiny", step: 60 }))).toBe("tiny (succeeded, step 60)");
    expect(runLabel(run("r2", "failed"))).toBe("r2 (failed)");
  });
});

describe("the checkpoint steps offered", () => {
  it("lists each step once, the latest first", () => {
    expect(checkpointSteps([ckpt(16), ckpt(48), ckpt(32), ckpt(48)])).toEqual([48, 32, 16]);
    expect(checkpointSteps([])).toEqual([]);
  });
});

describe("the body's fields", () => {
  it("names the run, and the step only when one is picked", () => {
    expect(sourceFields("knn", "r1", "")).toEqual({ run_id: "r1" });
    expect(sourceFields("linear", "r1", "32")).toEqual({ run_id: "r1", checkpoint_step: 32 });
  });

  it("sends neither for a baseline without a run, nor for a pretraining run", () => {
    expect(sourceFields("finetune", "", "32")).toEqual({});
    expect(sourceFields("pretrain", "r1", "32")).toEqual({});
  });
});

describe("a 422 about the checkpoint", () => {
  it("is shown beside the run picker, after any of its own", () => {
    expect(moveCheckpointError({ checkpoint: "needs a checkpoint", "optim.base_lr": "x" })).toEqual({
      run_id: "needs a checkpoint",
      "optim.base_lr": "x",
    });
    expect(moveCheckpointError({ checkpoint: "b", run_id: "a" })).toEqual({ run_id: "a; b" });
    const untouched = { run_id: "a" };
    expect(moveCheckpointError(untouched)).toBe(untouched);
  });
});
