import { render } from "preact";
import { act } from "preact/test-utils";
import { afterEach, describe, expect, it } from "vitest";
import { SchemaForm } from "./SchemaForm";
import { errorsByField, fieldsOf, overridesOf, parseText, toText, valuesOf, type Schema } from "./schema";

// A cut-down copy of the engine's pretrain schema (pydantic's shape: $defs, $ref, anyOf with null, const).
const schema: Schema = {
  $defs: {
    OptimConfig: {
      type: "object",
      title: "OptimConfig",
      properties: {
        name: { default: "adamw", enum: ["adamw", "lars", "lamb"], type: "string" },
        base_lr: { default: 1.5e-4, exclusiveMinimum: 0, type: "number", description: "lr per 256 images" },
        batch_size: { default: 4096, minimum: 1, type: "integer" },
        betas: { default: [0.9, 0.95], type: "array", prefixItems: [{ type: "number" }, { type: "number" }] },
      },
    },
    DataConfig: {
      type: "object",
      properties: {
        root: { anyOf: [{ type: "string" }, { type: "null" }], default: null },
        limit: { anyOf: [{ type: "integer", minimum: 1 }, { type: "null" }], default: null },
      },
    },
    ModelConfig: { type: "object", properties: { stop_grad_patch_proj: { default: false, type: "boolean" } } },
    TrainConfig: { type: "object", properties: { compile: { default: "auto", enum: ["auto", true, false] } } },
  },
  properties: {
    kind: { const: "pretrain", default: "pretrain", type: "string" },
    name: { anyOf: [{ type: "string" }, { type: "null" }], default: null },
    model: { $ref: "#/$defs/ModelConfig" },
    optim: { $ref: "#/$defs/OptimConfig" },
    data: { $ref: "#/$defs/DataConfig" },
    train: { $ref: "#/$defs/TrainConfig" },
  },
  type: "object",
};

const preset = { optim: { base_lr: 1e-3, batch_size: 256 } };

describe("fieldsOf", () => {
  it("lists every leaf with its dotted path, type and default; const fields are left out", () => {
    const f = fieldsOf(schema);
    expect(f.map((x) => x.path)).toEqual([
      "name",
      "model.stop_grad_patch_proj",
      "optim.name",
      "optim.base_lr",
      "optim.batch_size",
      "optim.betas",
      "data.root",
      "data.limit",
      "train.compile",
    ]);
    const lr = f.find((x) => x.path === "optim.base_lr")!;
    expect(lr).toMatchObject({ type: "number", default: 1.5e-4, section: "optim", exclusiveMinimum: 0 });
    expect(f.find((x) => x.path === "data.limit")).toMatchObject({
      type: "integer",
      nullable: true,
      default: null,
      minimum: 1,
    });
    expect(f.find((x) => x.path === "optim.name")!.options).toEqual(["adamw", "lars", "lamb"]);
  });
});

describe("overridesOf", () => {
  const fields = fieldsOf(schema);
  const base = valuesOf(fields, preset);
  const texts = () => Object.fromEntries(fields.map((f) => [f.path, toText(f, base[f.path])]));

  it("applies the preset over the defaults", () => {
    expect(base["optim.base_lr"]).toBe(1e-3);
    expect(base["optim.batch_size"]).toBe(256);
    expect(base["optim.name"]).toBe("adamw");
  });

  it("sends only the changed fields, as dotted keys with typed values", () => {
    const t = texts();
    expect(overridesOf(fields, base, t).overrides).toEqual({});
    t["optim.base_lr"] = "3e-4";
    t["data.limit"] = "2048";
    t["optim.betas"] = "0.9, 0.99";
    t["model.stop_grad_patch_proj"] = "true";
    t["optim.batch_size"] = " 256 "; // same value, other text: not an override
    expect(overridesOf(fields, base, t)).toEqual({
      overrides: {
        "optim.base_lr": 3e-4,
        "data.limit": 2048,
        "optim.betas": [0.9, 0.99],
        "model.stop_grad_patch_proj": true,
      },
      errors: {},
    });
  });

  it("keeps an enum's non-string values typed (train.compile: auto, true, false)", () => {
    const compile = fields.find((f) => f.path === "train.compile")!;
    expect(compile).toMatchObject({ type: "enum", options: ["auto", "true", "false"], default: "auto" });
    expect(toText(compile, base["train.compile"])).toBe("auto");
    const t = texts();
    t["train.compile"] = "false";
    expect(overridesOf(fields, base, t).overrides).toEqual({ "train.compile": false });
    t["train.compile"] = "true";
    expect(overridesOf(fields, base, t).overrides).toEqual({ "train.compile": true });
    expect(parseText(compile, "yes")).toEqual({ ok: false, error: "one of auto, true, false" });
  });

  it("refuses text that does not parse, with the field's own message", () => {
    const t = texts();
    t["optim.batch_size"] = "12.5";
    t["optim.base_lr"] = "0";
    const r = overridesOf(fields, base, t);
    expect(r.errors).toEqual({ "optim.batch_size": "must be a whole number", "optim.base_lr": "must be > 0" });
    expect(r.overrides).toEqual({});
    expect(
      parseText(
        fields.find((f) => f.path === "data.root")!,
        "",
      ),
    ).toEqual({ ok: true, value: null });
  });
});

describe("errorsByField", () => {
  const paths = fieldsOf(schema)
    .map((f) => f.path)
    .concat(["preset"]);
  it("maps the engine's 422 loc paths onto fields (longest prefix), and keeps the rest for the top", () => {
    const detail = [
      { loc: ["body", "spec", "optim", "base_lr"], msg: "Input should be greater than 0", type: "value_error" },
      { loc: ["body", "spec", "optim", "betas", "1"], msg: "Field required", type: "value_error" },
      { loc: ["body", "preset"], msg: "unknown preset 'x'", type: "value_error" },
      { loc: ["body", "overrides", "data.limit"], msg: "bad", type: "value_error" },
      { loc: ["body", "spec", "optim", "nope"], msg: "unknown key", type: "value_error" },
    ];
    expect(errorsByField(detail, paths)).toEqual({
      "optim.base_lr": "Input should be greater than 0",
      "optim.betas": "Field required",
      preset: "unknown preset 'x'",
      "data.limit": "bad",
      "": "optim.nope: unknown key",
    });
  });
});

describe("SchemaForm (rendered)", () => {
  let root: HTMLDivElement | null = null;
  afterEach(() => {
    if (root) render(null, root);
    root?.remove();
    root = null;
  });

  it("renders inputs with the defaults and shows each error beside its field", () => {
    const fields = fieldsOf(schema);
    const base = valuesOf(fields, preset);
    const texts = Object.fromEntries(fields.map((f) => [f.path, toText(f, base[f.path])]));
    texts["optim.base_lr"] = "-1";
    const errors = errorsByField(
      [{ loc: ["body", "spec", "optim", "base_lr"], msg: "Input should be greater than 0", type: "greater_than" }],
      fields.map((f) => f.path),
    );
    root = document.createElement("div");
    document.body.appendChild(root);
    const changes: [string, string][] = [];
    act(() => {
      render(
        <SchemaForm
          fields={fields}
          texts={texts}
          base={base}
          errors={errors}
          onChange={(p, t) => changes.push([p, t])}
        />,
        root!,
      );
    });
    const q = (id: string) => root!.querySelector(`[data-testid="${id}"]`) as HTMLInputElement | null;
    expect(q("field-optim.batch_size")!.value).toBe("256");
    expect(q("field-optim.name")!.value).toBe("adamw");
    expect(q("field-data.root")!.value).toBe("");
    expect(q("field-model.stop_grad_patch_proj")!.checked).toBe(false);
    expect(q("field-kind")).toBeNull();
    const err = q("field-error-optim.base_lr")!;
    expect(err.textContent).toBe("Input should be greater than 0");
    // the error sits in the same field block as its input, and the input points at it
    expect(err.closest(".field")!.getAttribute("data-path")).toBe("optim.base_lr");
    expect(q("field-optim.base_lr")!.getAttribute("aria-describedby")).toContain(err.id);
    expect(q("field-error-optim.batch_size")).toBeNull();
    // the section holding the error is open; the changed field is marked
    expect((root!.querySelector('[data-testid="section-optim"]') as HTMLDetailsElement).open).toBe(true);
    expect(err.closest(".field")!.classList.contains("changed")).toBe(true);
    // typing reports the path and the text
    const input = q("field-optim.batch_size")!;
    input.value = "512";
    act(() => {
      input.dispatchEvent(new Event("input", { bubbles: true }));
    });
    expect(changes).toEqual([["optim.batch_size", "512"]]);
  });
});
