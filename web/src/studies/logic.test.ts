import { describe, expect, it } from "vitest";
import type { RunPublic, RunStatus, StudyRow, TemplatePublic } from "../api/types";
import type { FieldDef } from "../form/schema";
import {
  buildStudyRequest,
  chipOrder,
  chipText,
  emptyForm,
  gridOf,
  parseOverrides,
  progressSegments,
  runsToCancel,
  sparkPath,
  splitValues,
  studyErrorKey,
  studyErrors,
  templateAxes,
} from "./logic";

const field = (path: string, type: FieldDef["type"], extra: Partial<FieldDef> = {}): FieldDef => ({
  path,
  section: path.split(".")[0],
  title: path,
  description: "",
  type,
  nullable: false,
  options: [],
  values: [],
  default: null,
  ...extra,
});
const FIELDS = [
  field("optim.base_lr", "number", { exclusiveMinimum: 0 }),
  field("optim.batch_size", "integer", { minimum: 1 }),
  field("model.stop_grad_patch_proj", "boolean"),
  field("framework", "enum", { options: ["mocov3", "simclr", "byol", "swav"] }),
  field("augment.jitter", "array"),
];

describe("splitValues", () => {
  it("splits on top-level commas only", () => {
    expect(splitValues(" 1e-4, 3e-4 ,, ")).toEqual(["1e-4", "3e-4"]);
    expect(splitValues("[0.4, 0.4], [0.8, 0.8]")).toEqual(["[0.4, 0.4]", "[0.8, 0.8]"]);
    expect(splitValues('"a,b", c')).toEqual(['"a,b"', "c"]);
  });
});

describe("buildStudyRequest", () => {
  it("parses each axis value by its field's type and keeps the rest of the form", () => {
    const form = {
      ...emptyForm(),
      name: " lr study ",
      preset: "fmnist_tiny",
      overrides: "optim.batch_size=64\ntrain.x=1",
      axes: [
        { path: "optim.base_lr", text: "1e-4, 3e-4" },
        { path: "model.stop_grad_patch_proj", text: "yes, no" },
      ],
      evaluations: ["knn" as const, "linear" as const],
      tags: "a, b",
    };
    const fields = [...FIELDS, field("train.x", "integer")];
    const { body, errors } = buildStudyRequest(form, fields);
    expect(errors).toEqual({});
    expect(body).toEqual({
      name: "lr study",
      preset: "fmnist_tiny",
      overrides: { "optim.batch_size": 64, "train.x": 1 },
      axes: [
        { path: "optim.base_lr", values: [1e-4, 3e-4] },
        { path: "model.stop_grad_patch_proj", values: [true, false] },
      ],
      evaluations: ["knn", "linear"],
      project: "default",
      tags: ["a", "b"],
      notes: "",
    });
  });

  it("reports bad values at their index, unknown paths and missing pieces", () => {
    const form = {
      ...emptyForm(),
      axes: [
        { path: "optim.base_lr", text: "1e-4, abc, -1, 1e-4" },
        { path: "optim.nope", text: "1" },
      ],
      overrides: "optim.batch_size=0.5, junk",
      evaluations: [],
    };
    const { body, errors } = buildStudyRequest(form, FIELDS);
    expect(body).toBeNull();
    expect(errors.name).toBeTruthy();
    expect(errors.evaluations).toBeTruthy();
    expect(errors["axes.0.values.1"]).toMatch(/abc: not a number/);
    expect(errors["axes.0.values.2"]).toMatch(/-1: must be > 0/);
    expect(errors["axes.0.values.3"]).toMatch(/twice/);
    expect(errors["axes.1.path"]).toMatch(/no such field/);
    expect(errors["overrides.optim.batch_size"]).toMatch(/whole number/);
    expect(errors.overrides).toMatch(/key=value/);
  });

  it("sends a template alone, or a template's axes edited with its labels kept", () => {
    const t: TemplatePublic = {
      name: "learning-rate",
      title: "Learning rate",
      description: "",
      paper: null,
      axes: [{ name: "learning rate", labels: ["0.5e-4", "1.0e-4"] }],
      values: [[{ "optim.base_lr": 0.5e-4 }, { "optim.base_lr": 1e-4 }]],
      paper_numbers: {},
    };
    const plain = buildStudyRequest({ ...emptyForm(), name: "s", template: "learning-rate" }, FIELDS);
    expect(plain.body).toMatchObject({ template: "learning-rate" });
    expect(plain.body!.axes).toBeUndefined();
    const axes = templateAxes(t)!;
    expect(axes[0].path).toBe("optim.base_lr");
    axes[0].text += ", 2e-4";
    const edited = buildStudyRequest({ ...emptyForm(), name: "s", template: "learning-rate", axes }, FIELDS);
    expect(edited.body!.axes).toEqual([
      {
        path: "optim.base_lr",
        name: "learning rate",
        values: [{ label: "0.5e-4", value: 0.5e-4 }, { label: "1.0e-4", value: 1e-4 }, 2e-4],
      },
    ]);
  });

  it("cannot edit a template whose values set several keys", () => {
    const t: TemplatePublic = {
      name: "optimizer",
      title: "",
      description: "",
      paper: null,
      paper_numbers: {},
      axes: [{ name: "optimizer", labels: ["a", "b"] }],
      values: [[{ "optim.name": "adamw", "optim.base_lr": 1e-4 }, { "optim.name": "lamb" }]],
    };
    expect(templateAxes(t)).toBeNull();
  });
});

describe("422 locs", () => {
  it("map to the axis value, axis, override or field they name", () => {
    expect(studyErrorKey(["body", "axes", "0", "values", "1", "optim", "base_lr"])).toBe("axes.0.values.1");
    expect(studyErrorKey(["body", "axes", 1, "values", 0])).toBe("axes.1.values.0");
    expect(studyErrorKey(["body", "axes", "0", "values"])).toBe("axes.0");
    expect(studyErrorKey(["body", "axes", "0", "path"])).toBe("axes.0.path");
    expect(studyErrorKey(["body", "axes"])).toBe("axes");
    expect(studyErrorKey(["body", "overrides", "optim.base_lr"])).toBe("overrides.optim.base_lr");
    expect(studyErrorKey(["body", "eval_overrides", "knn", "k"])).toBe("evaluations");
    expect(studyErrorKey(["body", "preset"])).toBe("preset");
    expect(studyErrorKey(["body", "whatever"])).toBe("");
    expect(
      studyErrors([
        { loc: ["body", "axes", "0", "values", "1"], msg: "a", type: "value_error" },
        { loc: ["body", "axes", "0", "values", "1", "x"], msg: "b", type: "value_error" },
        { loc: ["body", "zzz"], msg: "c", type: "value_error" },
      ]),
    ).toEqual({ "axes.0.values.1": "a; b", "": "zzz: c" });
  });
});

const row = (labels: string[]): StudyRow => ({
  labels,
  overrides: {},
  run: null,
  evals: {},
  knn_curve: [],
  paper: null,
});

describe("gridOf", () => {
  it("lays two-axis rows out by the axes' label order, with holes as null", () => {
    const rows = [row(["frozen", "1e-4"]), row(["learned", "5e-5"]), row(["learned", "1e-4"]), row(["odd", "1e-4"])];
    const g = gridOf(rows, [{ labels: ["learned", "frozen"] }, { labels: ["5e-5", "1e-4"] }]);
    expect(g.rows).toEqual(["learned", "frozen", "odd"]);
    expect(g.cols).toEqual(["5e-5", "1e-4"]);
    expect(g.cells[0][0]).toBe(rows[1]);
    expect(g.cells[0][1]).toBe(rows[2]);
    expect(g.cells[1][0]).toBeNull();
    expect(g.cells[1][1]).toBe(rows[0]);
    expect(g.cells[2][1]).toBe(rows[3]);
  });
});

describe("display helpers", () => {
  it("progress segments in a fixed order", () => {
    expect(progressSegments({ queued: 1, succeeded: 3 })).toEqual([
      { status: "succeeded", n: 3, pct: 75 },
      { status: "queued", n: 1, pct: 25 },
    ]);
    expect(progressSegments({})).toEqual([]);
  });
  it("sparkline breaks at non-finite points", () => {
    expect(
      sparkPath(
        [
          [0, 10],
          [5, 20],
          [10, "nan"],
          [15, 30],
        ],
        30,
        10,
        [0, 40],
      ),
    ).toBe("M0.0,7.5L10.0,5.0M30.0,2.5");
    expect(sparkPath([[0, "nan"]], 30, 10)).toBe("");
    expect(sparkPath([[3, 50]], 30, 10)).toBe("M15.0,5.0");
  });
  it("chips are short", () => {
    expect(chipText("optim.base_lr", 0.0003)).toBe("optim.base_lr=3e-4");
    expect(chipText("model.stop_grad_patch_proj", false)).toBe("model.stop_grad_patch_proj=false");
    expect(chipText("a.b.c", 1e-6)).toBe("b.c=1e-6");
  });
  it("parseOverrides without a schema takes JSON or strings", () => {
    expect(parseOverrides("a=1, b=x, c=[1,2]", new Map())).toEqual({
      overrides: { a: 1, b: "x", c: [1, 2] },
      errors: {},
    });
  });
});

describe("runsToCancel", () => {
  const withRun = (status: RunStatus, cancel_requested = false, evals: Record<string, RunStatus> = {}): StudyRow => ({
    ...row([status]),
    run: { status, cancel_requested } as unknown as RunPublic,
    evals: Object.fromEntries(
      Object.entries(evals).map(([k, st]) => [k, { run_id: `${k}-1`, status: st, top1: null }]),
    ),
  });
  it("counts the runs and evaluations not ended nor already asked to stop", () => {
    expect(
      runsToCancel({
        rows: [
          withRun("queued"),
          withRun("running", true),
          withRun("lost"),
          withRun("succeeded", false, { knn: "running", linear: "succeeded" }),
          withRun("failed"),
        ],
      }),
    ).toBe(3);
    expect(
      runsToCancel({ rows: [withRun("succeeded", false, { knn: "succeeded" }), withRun("cancelled"), row(["x"])] }),
    ).toBe(0);
  });
});

describe("chipOrder", () => {
  it("puts the keys that tell rows apart first", () => {
    const { varying, order } = chipOrder([
      { "a.x": 1, "b.lr": 1e-4, "z.only": true },
      { "a.x": 1, "b.lr": 3e-4 },
    ]);
    expect(Array.from(varying).sort()).toEqual(["b.lr", "z.only"]);
    expect(order({ "a.x": 1, "b.lr": 1e-4, "z.only": true })).toEqual(["b.lr", "z.only", "a.x"]);
  });
});
