import { describe, expect, it } from "vitest";
import type { DatasetPublic } from "../../api/types";
import {
  activeRunId,
  applyDatasetMessage,
  channelColour,
  fmtChannels,
  fmtCount,
  fmtHw,
  fmtMeanStd,
  fmtSeconds,
  fmtSize,
  fmtSplits,
  foldMetrics,
  gridColumns,
  preparedChip,
  progressOf,
  sampleRows,
  samplesAlt,
  statusChip,
  totalImages,
} from "./format";

const FMNIST = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

describe("sizes, counts and times", () => {
  it("writes bytes in decimal units with about three digits", () => {
    expect(fmtSize(0)).toBe("0 B");
    expect(fmtSize(999)).toBe("999 B");
    expect(fmtSize(1000)).toBe("1.00 kB");
    expect(fmtSize(45_312_000)).toBe("45.3 MB");
    expect(fmtSize(812_000_000)).toBe("812 MB");
    expect(fmtSize(1_270_000_000)).toBe("1.27 GB");
    expect(fmtSize(146_900_000_000)).toBe("147 GB");
    expect(fmtSize(3.2e15)).toBe("3200 TB");
    expect(fmtSize(null)).toBe("—");
    expect(fmtSize(-1)).toBe("—");
    expect(fmtSize(Number.NaN)).toBe("—");
  });

  it("separates thousands whatever the locale", () => {
    expect(fmtCount(60000)).toBe("60,000");
    expect(fmtCount(1281167)).toBe("1,281,167");
    expect(fmtCount(999)).toBe("999");
    expect(fmtCount(1530.6)).toBe("1,531");
    expect(fmtCount(undefined)).toBe("—");
  });

  it("says how long a prepare took", () => {
    expect(fmtSeconds(4.25)).toBe("4.3 s");
    expect(fmtSeconds(48.4)).toBe("48 s");
    expect(fmtSeconds(192)).toBe("3 min 12 s");
    expect(fmtSeconds(7500)).toBe("2 h 05 min");
    expect(fmtSeconds(null)).toBe("—");
  });

  it("writes the splits as train / val, a missing val as a dash", () => {
    expect(fmtSplits({ train: { images: 60000 }, val: { images: 10000 } })).toBe("60,000 / 10,000");
    expect(fmtSplits({ train: { images: 1300 } })).toBe("1,300 / —");
    expect(fmtSplits(null)).toBe("—");
    expect(totalImages({ train: { images: 60000 }, val: { images: 10000 } })).toBe(70000);
    expect(totalImages({ train: { images: 5 } })).toBe(5);
    expect(totalImages(null)).toBeNull();
  });
});

describe("mean, std and image sizes", () => {
  it("says a grey set's channels once and a colour set's three", () => {
    expect(fmtChannels([0.2860402, 0.2860402, 0.2860402])).toBe("0.286");
    expect(fmtChannels([0.485, 0.456, 0.406])).toBe("0.485, 0.456, 0.406");
    expect(fmtChannels(null)).toBe("—");
    expect(fmtMeanStd([0.286, 0.286, 0.286], [0.353, 0.353, 0.353])).toBe("0.286 ± 0.353");
    expect(fmtMeanStd([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])).toBe("0.485, 0.456, 0.406 ± 0.229, 0.224, 0.225");
    expect(fmtMeanStd(null, [0.3])).toBe("—");
  });

  it("colours a swatch by the values, clamped to [0, 1]", () => {
    expect(channelColour([0.5])).toBe("rgb(128, 128, 128)");
    expect(channelColour([1, 0, 0.2])).toBe("rgb(255, 0, 51)");
    expect(channelColour([1.4, -0.1, 0])).toBe("rgb(255, 0, 0)");
  });

  it("writes [height, width] as width×height", () => {
    expect(fmtHw([375, 500])).toBe("500×375");
    expect(fmtHw(null)).toBe("—");
  });
});

const ds = (over: Partial<DatasetPublic>) =>
  ({
    status: "ready",
    prepare_status: "none",
    packed: null,
    scan_run_id: "scan1",
    prepare_run_id: null,
    ...over,
  }) as DatasetPublic;

describe("the chips", () => {
  it("colours the status as the run badges do", () => {
    expect(statusChip(ds({ status: "scanning" }))).toEqual({ text: "scanning", tone: "running" });
    expect(statusChip(ds({ status: "ready" }))).toEqual({ text: "ready", tone: "succeeded" });
    expect(statusChip(ds({ status: "failed" }))).toEqual({ text: "failed", tone: "failed" });
  });

  it("says whether a packed copy exists and its size", () => {
    expect(preparedChip(ds({}))).toEqual({ text: "not packed", tone: "queued" });
    expect(preparedChip(ds({ prepare_status: "preparing" }))).toEqual({ text: "preparing", tone: "running" });
    const packed = {
      root: "/s",
      short_side: 256,
      quality: 90,
      shards: 3,
      bytes: 612_400_000,
      splits: { train: { images: 9 } },
      seconds: 12,
    };
    expect(preparedChip(ds({ prepare_status: "prepared", packed }))).toEqual({
      text: "packed · 612 MB",
      tone: "succeeded",
    });
    expect(preparedChip(ds({ prepare_status: "failed" })).tone).toBe("failed");
  });

  it("follows the prepare run while preparing, else the scan while scanning", () => {
    expect(activeRunId(ds({ status: "scanning" }))).toBe("scan1");
    expect(activeRunId(ds({ prepare_status: "preparing", prepare_run_id: "prep1" }))).toBe("prep1");
    expect(activeRunId(ds({}))).toBeNull();
  });
});

describe("the sample grid's caption", () => {
  it("counts the columns from the image's width over 64 px cells", () => {
    expect(gridColumns(512, 32)).toBe(8);
    expect(gridColumns(530, 32)).toBe(8); // a thin border around the cells
    expect(gridColumns(1024, 10)).toBe(10); // never more columns than cells
    expect(gridColumns(0, 32)).toBe(8); // not loaded yet: a guess
    expect(gridColumns(40, 32)).toBe(1);
  });

  it("lists each row's class names in the labels' order", () => {
    const labels = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5];
    expect(sampleRows(labels, FMNIST, 4)).toEqual([
      "Ankle boot, T-shirt/top, T-shirt/top, Dress",
      "T-shirt/top, Pullover, Sneaker, Pullover",
      "Sandal, Sandal",
    ]);
    expect(sampleRows([1, 12], ["a", "b"], 8)).toEqual(["b, class 12"]);
    expect(sampleRows([1, 0], null, 1)).toEqual(["class 1", "class 0"]);
    expect(sampleRows([], FMNIST, 8)).toEqual([]);
  });

  it("describes the grid in its alt text", () => {
    expect(samplesAlt("fashion-mnist", 32, 8)).toBe(
      "A grid of 32 training images of fashion-mnist, 8 per row, in the order of the labels listed below.",
    );
  });
});

describe("a scan or prepare run's progress", () => {
  it("fills the bar from images done over the total and says the phase and the rate", () => {
    const p = foldMetrics(null, { step: 12000, total_steps: 60000, phase: "pack", images_per_s: 1530.4 });
    expect(p).toEqual({ status: "running", step: 12000, total: 60000, phase: "pack", imagesPerS: 1530.4 });
    expect(progressOf(p)).toEqual({ pct: 20, text: "pack · 12,000 / 60,000 images · 1,530 img/s" });
  });

  it("keeps what a later payload leaves out and never goes past the total", () => {
    let p = foldMetrics(null, { step: 5, total_steps: 10, phase: "scan" });
    p = foldMetrics(p, { step: 11 });
    expect(p.total).toBe(10);
    expect(p.phase).toBe("scan");
    expect(progressOf(p)).toEqual({ pct: 100, text: "scan · 10 / 10 images" });
    expect(foldMetrics({ ...p, status: "queued" }, { step: 1 }).status).toBe("running");
    expect(foldMetrics(p, { step: "x", total_steps: Number.NaN }).step).toBe(11);
  });

  it("says what it waits for before any number", () => {
    expect(progressOf(null)).toEqual({ pct: null, text: "starting…" });
    const queued = { status: "queued", step: null, total: null, phase: null, imagesPerS: null };
    expect(progressOf(queued)).toEqual({ pct: null, text: "queued: waiting for a worker" });
    expect(progressOf({ ...queued, status: "running" })).toEqual({ pct: null, text: "running" });
    expect(progressOf({ ...queued, status: "failed", step: 3, total: 0 })).toEqual({ pct: null, text: "failed" });
  });
});

describe("the list kept live from the team stream", () => {
  const row = (name: string, extra: Partial<DatasetPublic> = {}) =>
    ({ name, team: "t1", builtin: false, status: "ready", prepare_status: "none", ...extra }) as DatasetPublic;
  const list = [row("fashion-mnist", { builtin: true }), row("imagenet", { status: "scanning" })];

  it("replaces a dataset's row with its new state", () => {
    const next = applyDatasetMessage(list, row("imagenet", { status: "ready" }), "t1");
    expect(next.map((r) => [r.name, r.status])).toEqual([
      ["fashion-mnist", "ready"],
      ["imagenet", "ready"],
    ]);
  });

  it("adds a new one in the API's order and drops a removed one", () => {
    const added = applyDatasetMessage(list, row("cifar", { status: "scanning" }), "t1");
    expect(added.map((r) => r.name)).toEqual(["fashion-mnist", "cifar", "imagenet"]);
    expect(applyDatasetMessage(added, { name: "cifar", team: "t1", deleted: true }, "t1").map((r) => r.name)).toEqual([
      "fashion-mnist",
      "imagenet",
    ]);
  });

  it("leaves the list alone for another team's dataset or a message it cannot read", () => {
    expect(applyDatasetMessage(list, row("imagenet", { team: "t2", status: "failed" }), "t1")).toBe(list);
    expect(applyDatasetMessage(list, { name: "imagenet", team: "t2", deleted: true }, "t1")).toBe(list);
    expect(applyDatasetMessage(list, { name: "x", team: "t1" } as DatasetPublic, "t1")).toBe(list);
  });
});
