import { describe, expect, it } from "vitest";
import { addErrors, addRequest, prepareErrors, shortSideOf } from "./add";

describe("the Add dataset request", () => {
  it("sends the name and path trimmed, and null for auto-detect", () => {
    expect(addRequest(" imagenet ", " /data/imagenet ", "")).toEqual({
      body: { name: "imagenet", path: "/data/imagenet", kind: null },
      errors: {},
    });
    expect(addRequest("cifar.v2", "/data/c", "cifar10").body).toEqual({
      name: "cifar.v2",
      path: "/data/c",
      kind: "cifar10",
    });
  });

  it("refuses what the server would, at the field", () => {
    expect(addRequest("", "", "").errors).toEqual({
      name: "required",
      path: "required: the dataset's folder on the workers' disks",
    });
    expect(addRequest("ImageNet", "/d", "").errors.name).toMatch(/lowercase/);
    expect(addRequest("-x", "/d", "").errors.name).toMatch(/starting with a letter or digit/);
    expect(addRequest("a/b", "/d", "").errors.name).toBeDefined();
    expect(addRequest("a".repeat(65), "/d", "").errors.name).toBe("at most 64 characters");
    expect(addRequest("a".repeat(64), "/d", "").body?.name).toHaveLength(64);
    expect(addRequest("x", "/d", "packed").errors.kind).toMatch(/^auto-detect or one of imagefolder, /);
  });
});

describe("a 422 shown at its field", () => {
  it("puts each item at the body field its loc names", () => {
    expect(
      addErrors([
        { loc: ["body", "path"], msg: "/etc is outside the allowed dataset roots", type: "value_error" },
        { loc: ["body", "name"], msg: "taken", type: "value_error" },
        { loc: ["body", "name"], msg: "too long", type: "value_error" },
        { loc: ["body", "kind"], msg: "Input should be 'imagefolder', ...", type: "literal_error" },
      ]),
    ).toEqual({
      path: "/etc is outside the allowed dataset roots",
      name: "taken; too long",
      kind: "Input should be 'imagefolder', ...",
    });
  });

  it("keeps what names no field for the top of the form", () => {
    expect(addErrors([{ loc: ["body"], msg: "Field required", type: "missing" }])).toEqual({ "": "Field required" });
    expect(addErrors([{ loc: ["body", "extra"], msg: "not permitted", type: "x" }])).toEqual({
      "": "extra: not permitted",
    });
  });

  it("puts a refused prepare at the short side", () => {
    expect(prepareErrors([{ loc: ["body", "short_side"], msg: "≥ 32", type: "x" }])).toEqual({ short_side: "≥ 32" });
    expect(prepareErrors([{ loc: ["body", "quality"], msg: "≤ 100", type: "x" }])).toEqual({ quality: "≤ 100" });
  });
});

describe("the short side", () => {
  it("takes whole pixels from 32 to 4096", () => {
    expect(shortSideOf(" 256 ")).toEqual({ value: 256 });
    expect(shortSideOf("32")).toEqual({ value: 32 });
    expect(shortSideOf("4096")).toEqual({ value: 4096 });
    expect(shortSideOf("31").error).toBe("between 32 and 4096");
    expect(shortSideOf("5000").error).toBe("between 32 and 4096");
    expect(shortSideOf("256.5").error).toBe("a whole number of pixels");
    expect(shortSideOf("").error).toBe("a whole number of pixels");
  });
});
