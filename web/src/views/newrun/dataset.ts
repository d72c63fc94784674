// The New run form's "Dataset": one of the team's ready datasets by name, sent as the spec's `data.name` (the
// server sets data.dataset and data.root from it, the packed copy once there is one, and the measured mean and
// std unless the spec has its own). Pure functions, tested without a browser: which one the
// form starts on, what the choice sends, the datasets offered, and their facts beside the select.
//
// A choice that only repeats what the preset already reads (Fashion-MNIST, the presets' data) sends nothing, as
// any field left at the preset's value; "(none)" leaves the data fields under `data` in charge (data.root typed
// by hand), and the generated form has no `data.name` input of its own: the select is the one place to set it.
import type { DatasetPublic } from "../../api/types";
import type { RunDetail } from "../../api/types";
import { flatten } from "../../form/schema";
import { fmtCount, totalImages } from "../datasets/format";

export const DEFAULT_DATASET = "fashion-mnist";
/** The spec field the select replaces (hidden from the generated form; a 422 about it shows at the select). */
export const DATA_NAME = "data.name";
/** What a registered dataset sets when the run is submitted, whatever was typed (server/datasets/resolve.py). */
export const SET_BY_DATASET = ["data.dataset", "data.root"];

/** The registered dataset the form's baseline (the schema's defaults with the preset on top) already reads. */
export function impliedDataset(base: Record<string, unknown>): string {
  const named = base[DATA_NAME];
  if (typeof named === "string" && named) return named;
  if (base["data.dataset"] === "fashion_mnist" && (base["data.root"] === null || base["data.root"] === undefined))
    return DEFAULT_DATASET;
  return "";
}

/** The dataset a cloned run named: what it was submitted with (newer servers), else its spec's. */
export function clonedDataset(run: Pick<RunDetail, "overrides" | "spec">): string | null {
  const pick = (tree: unknown) => {
    if (!tree || typeof tree !== "object") return undefined;
    const v = flatten(tree as Record<string, unknown>)[DATA_NAME];
    return typeof v === "string" && v ? v : undefined;
  };
  const submitted = run.overrides && typeof run.overrides === "object" ? run.overrides : null;
  return (submitted ? pick(submitted) : pick(run.spec)) ?? null;
}

/** The override the choice makes: `data.name` unless it is "(none)" or what the baseline reads already. */
export function datasetOverride(chosen: string, implied: string): Record<string, unknown> {
  return chosen && chosen !== implied ? { [DATA_NAME]: chosen } : {};
}

/** The datasets offered: the team's ready ones, by name. */
export function datasetChoices(all: DatasetPublic[]): DatasetPublic[] {
  return all.filter((d) => d.status === "ready").sort((a, b) => a.name.localeCompare(b.name));
}

/** Beside the select: "1,331,167 images · 1,000 classes". */
export function datasetFacts(d: Pick<DatasetPublic, "splits" | "num_classes" | "classes">): string {
  const n = totalImages(d.splits);
  const k = d.num_classes ?? d.classes?.length ?? null;
  const parts = [];
  if (n !== null) parts.push(`${fmtCount(n)} images`);
  if (k !== null) parts.push(`${fmtCount(k)} class${k === 1 ? "" : "es"}`);
  return parts.join(" · ");
}

/** The data fields typed by hand that a chosen dataset will replace (said beside the select). */
export function replacedByDataset(overrides: Record<string, unknown>, sent: boolean): string[] {
  return sent ? SET_BY_DATASET.filter((k) => k in overrides) : [];
}
