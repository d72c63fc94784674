import { describe, expect, it } from "vitest";
import type { CheckpointPublic } from "../../api/types";
import { fieldsOf, toText, valuesOf, type Schema } from "../../form/schema";
import { buildForkRequest, FORK_FIELDS, forkCheckpoints, forkErrors, type ForkForm } from "./fork";

// The engine's pretrain schema, cut down to what the dialog uses and one more field for the rows.
const schema: Schema = {
  $defs: {
    OptimConfig: {
      type: "object",
      properties: {
        base_lr: { default: 1.5e-4, exclusiveMinimum: 0, type: "number" },
        epochs: { default: 300, minimum: 1, type: "integer" },
      },
    },
    TrainConfig: { type: "object", properties: { max_steps: { anyOf: [{ type: "integer" }, { type: "null" }] } } },
    MonitorConfig: {
      type: "object",
      properties: { policy: { default: "record", enum: ["record", "stop", "rollback"], type: "string" } },
    },
    AugmentConfig: { type: "object", properties: { min_scale: { default: 0.08, type: "number" } } },
  },
  properties: {
    optim: { $ref: "#/$defs/OptimConfig" },
    train: { $ref: "#/$defs/TrainConfig" },
    monitor: { $ref: "#/$defs/MonitorConfig" },
    augment: { $ref: "#/$defs/AugmentConfig" },
  },
  type: "object",
};
const fields = fieldsOf(schema);
const parentSpec = { optim: { base_lr: 1e-3, epochs: 2 }, train: { max_steps: 60 }, monitor: { policy: "record" } };
const base = valuesOf(fields, parentSpec);
const form = (over: Partial<ForkForm> = {}): ForkForm => ({
  step: 32,
  name: "",
  texts: Object.fromEntries(
    fields.filter((f) => FORK_FIELDS.includes(f.path)).map((f) => [f.path, toText(f, base[f.path])]),
  ),
  rows: "",
  ...over,
});

describe("buildForkRequest", () => {
  it("sends only what changed: a common field, a row, the checkpoint step and the name", () => {
    const f = form({ name: " lower lr ", rows: "augment.min_scale=0.2" });
    f.texts["optim.base_lr"] = "5e-4";
    const { body, errors } = buildForkRequest(f, fields, base);
    expect(errors).toEqual({});
    expect(body).toEqual({
      checkpoint_step: 32,
      name: "lower lr",
      overrides: { "optim.base_lr": 5e-4, "augment.min_scale": 0.2 },
    });
  });

  it("leaves the step to the server (the latest) when none is chosen, and sends no empty name", () => {
    expect(buildForkRequest(form({ step: null }), fields, base).body).toEqual({ overrides: {} });
  });

  it("refuses a bad value, a row that is not key=value, an unknown key and a key set twice", () => {
    const f = form({ rows: "optim.base_lr=1e-4\nnot a row\nnope.x=1" });
    f.texts["optim.base_lr"] = "2e-4";
    f.texts["optim.epochs"] = "1.5";
    const { body, errors } = buildForkRequest(f, fields, base);
    expect(body).toBeNull();
    expect(errors["optim.epochs"]).toBe("must be a whole number");
    expect(errors.rows).toContain('"not a row": write key=value');
    expect(errors.rows).toContain("nope.x: no such field");
    expect(errors.rows).toContain("optim.base_lr: set both above and in a row");
  });

  it("parses the monitor policy as its enum", () => {
    const f = form();
    f.texts["monitor.policy"] = "rollback";
    expect(buildForkRequest(f, fields, base).body?.overrides).toEqual({ "monitor.policy": "rollback" });
  });
});

describe("forkErrors", () => {
  it("puts the API's 422 beside what it names", () => {
    const e = forkErrors(
      [
        { loc: ["body", "checkpoint_step"], msg: "no checkpoint at step 7", type: "x" },
        { loc: ["body", "overrides", "optim.base_lr"], msg: "must be > 0", type: "x" },
        { loc: ["body", "overrides", "fork_from"], msg: "set by the server", type: "x" },
        { loc: ["body", "overrides", "augment.min_scale"], msg: "too small", type: "x" },
        { loc: ["body"], msg: "the run has no checkpoint", type: "x" },
      ],
      ["augment.min_scale"],
    );
    expect(e.checkpoint_step).toBe("no checkpoint at step 7");
    expect(e["optim.base_lr"]).toBe("must be > 0");
    expect(e.rows).toBe("augment.min_scale: too small");
    expect(e[""]).toContain("fork_from: set by the server");
    expect(e[""]).toContain("the run has no checkpoint");
  });
});

describe("forkCheckpoints", () => {
  it("lists each kept step once, latest first", () => {
    const c = (step: number, healthy = true): CheckpointPublic =>
      ({ step, healthy, path: `ckpt_${step}.pt`, time: 0 }) as unknown as CheckpointPublic;
    expect(forkCheckpoints([c(16), c(48, false), c(32), c(48, false)]).map((x) => x.step)).toEqual([48, 32, 16]);
  });
});
