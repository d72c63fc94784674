// How a dataset's facts read on the page. Pure functions, tested without a browser: sizes on disk, image counts,
// mean/std, image sizes, the chips' words, the sample grid's caption, and a prepare (or scan) run's progress.
import type { DatasetPublic, DatasetSplits, PrepareStatus } from "../../api/types";

/** Bytes in decimal units, as disks are sold and `du --si` prints them: "812 kB", "45.3 MB", "1.27 GB". */
export function fmtSize(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return "—";
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = bytes / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/** A count with thousands separators, whatever the browser's locale (the tests read the same text). */
export function fmtCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  return Math.round(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Seconds as "48 s", "3 min 12 s", "2 h 05 min". */
export function fmtSeconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return "—";
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s - 60 * m)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/** "60,000 / 10,000" (train / val), "1,281 / —" without a validation split, "—" before the scan. */
export function fmtSplits(splits: DatasetSplits | null | undefined): string {
  if (!splits) return "—";
  return `${fmtCount(splits.train?.images)} / ${splits.val ? fmtCount(splits.val.images) : "—"}`;
}

/** Every image of the dataset, train and val together. */
export function totalImages(splits: DatasetSplits | null | undefined): number | null {
  if (!splits) return null;
  return (splits.train?.images ?? 0) + (splits.val?.images ?? 0);
}

/** Per-channel values, three decimals; channels that are all equal (a grey set) are said once. */
export function fmtChannels(v: number[] | null | undefined): string {
  if (!v || !v.length) return "—";
  const same = v.every((x) => Math.abs(x - v[0]) < 5e-4);
  return same ? v[0].toFixed(3) : v.map((x) => x.toFixed(3)).join(", ");
}

/** The table's compact mean/std: "0.286 ± 0.353" (grey), "0.485, 0.456, 0.406 ± 0.229, 0.224, 0.225". */
export function fmtMeanStd(mean: number[] | null | undefined, std: number[] | null | undefined): string {
  if (!mean?.length || !std?.length) return "—";
  return `${fmtChannels(mean)} ± ${fmtChannels(std)}`;
}

/** The CSS colour of [0, 1] channel values (one value: grey; three: RGB). */
export function channelColour(v: number[]): string {
  const b = (x: number) => Math.round(255 * Math.max(0, Math.min(1, x)));
  const [r, g, bl] = v.length >= 3 ? v : [v[0], v[0], v[0]];
  return `rgb(${b(r)}, ${b(g)}, ${b(bl)})`;
}

/** A [height, width] pair as width × height, the way image sizes are usually written. */
export function fmtHw(hw: number[] | null | undefined): string {
  if (!hw || hw.length !== 2) return "—";
  return `${hw[1]}×${hw[0]}`;
}

export type ChipTone = "queued" | "running" | "succeeded" | "failed";

/** The status chip: its words and its colour (the run badges' colours). */
export function statusChip(d: Pick<DatasetPublic, "status">): { text: string; tone: ChipTone } {
  const tone: Record<string, ChipTone> = { scanning: "running", ready: "succeeded", failed: "failed" };
  return { text: d.status, tone: tone[d.status] ?? "queued" };
}

/** The packed copy's chip: "not packed", "preparing", "packed · 1.27 GB", "prepare failed". */
export function preparedChip(d: Pick<DatasetPublic, "prepare_status" | "packed">): { text: string; tone: ChipTone } {
  const s: PrepareStatus = d.prepare_status;
  if (s === "prepared") return { text: d.packed ? `packed · ${fmtSize(d.packed.bytes)}` : "packed", tone: "succeeded" };
  if (s === "preparing") return { text: "preparing", tone: "running" };
  if (s === "failed") return { text: "prepare failed", tone: "failed" };
  return { text: "not packed", tone: "queued" };
}

/** Whether a dataset is being worked on (its list and page keep refreshing until it is not). */
export const isBusy = (d: Pick<DatasetPublic, "status" | "prepare_status">) =>
  d.status === "scanning" || d.prepare_status === "preparing";

/** The run that works on it now: the prepare run while preparing, else the scan while scanning. */
export function activeRunId(d: Pick<DatasetPublic, "status" | "prepare_status" | "scan_run_id" | "prepare_run_id">) {
  if (d.prepare_status === "preparing" && d.prepare_run_id) return d.prepare_run_id;
  if (d.status === "scanning" && d.scan_run_id) return d.scan_run_id;
  return null;
}

/** Cells in one row of the sample grid: the image's width over the 64 px cell (a thin border left over). */
export function gridColumns(naturalWidth: number, cells: number, cell = 64): number {
  if (!(naturalWidth > 0) || cells <= 0) return Math.max(1, Math.min(cells, 8));
  return Math.max(1, Math.min(cells, Math.floor(naturalWidth / cell)));
}

/** The grid's caption: one line per row, the class name of each cell in order (an unknown label by number). */
export function sampleRows(labels: number[], classes: string[] | null | undefined, columns: number): string[] {
  const cols = Math.max(1, Math.floor(columns));
  const name = (l: number) => classes?.[l] ?? `class ${l}`;
  const rows: string[] = [];
  for (let i = 0; i < labels.length; i += cols)
    rows.push(
      labels
        .slice(i, i + cols)
        .map(name)
        .join(", "),
    );
  return rows;
}

/** The sample grid's alt text: what it is, for someone who cannot see it (the caption lists the labels). */
export function samplesAlt(name: string, cells: number, columns: number): string {
  return `A grid of ${cells} training images of ${name}, ${columns} per row, in the order of the labels listed below.`;
}

export interface RunProgress {
  status: string;
  /** Images done, and of how many (the engine's prepare metrics); null before the first. */
  step: number | null;
  total: number | null;
  phase: string | null;
  imagesPerS: number | null;
}

/** The progress bar's fill (0-100, null when unknown) and its words, e.g. "pack · 12,000 / 60,000 · 1,530 img/s". */
export function progressOf(p: RunProgress | null): { pct: number | null; text: string } {
  if (!p) return { pct: null, text: "starting…" };
  if (p.status === "queued") return { pct: null, text: "queued: waiting for a worker" };
  const known = p.step !== null && p.total !== null && p.total > 0;
  const pct = known ? Math.max(0, Math.min(100, (100 * p.step!) / p.total!)) : null;
  const parts: string[] = [];
  if (p.phase) parts.push(p.phase);
  // (the run's own step, from REST, counts one past the images done: never say more than the total)
  if (known) parts.push(`${fmtCount(Math.min(p.step!, p.total!))} / ${fmtCount(p.total)} images`);
  else if (p.status === "running") parts.push("running");
  else parts.push(p.status);
  if (p.imagesPerS !== null && p.imagesPerS > 0 && known && p.step! < p.total!)
    parts.push(`${fmtCount(p.imagesPerS)} img/s`);
  return { pct, text: parts.join(" · ") };
}

/** A metrics payload of a prepare run ({step, total_steps, phase, images_per_s}) folded into the progress. */
export function foldMetrics(cur: RunProgress | null, payload: Record<string, unknown>): RunProgress {
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const base: RunProgress = cur ?? { status: "running", step: null, total: null, phase: null, imagesPerS: null };
  return {
    status: base.status === "queued" ? "running" : base.status,
    step: num(payload.step) ?? base.step,
    total: num(payload.total_steps) ?? base.total,
    phase: typeof payload.phase === "string" ? payload.phase : base.phase,
    imagesPerS: num(payload.images_per_s) ?? base.imagesPerS,
  };
}

/** A team-stream `dataset` message: a dataset's new state, or {name, team, deleted: true}. */
export type DatasetMessage = (DatasetPublic & { deleted?: false }) | { name: string; team: string; deleted: true };

/**
 * The list after a `dataset` message: the row replaced (or added, then kept in the API's order: the built-in
 * first, then by name) or removed. A message of another of the user's teams leaves the list alone.
 */
export function applyDatasetMessage(rows: DatasetPublic[], m: DatasetMessage, team: string | null): DatasetPublic[] {
  if (!m || typeof m.name !== "string" || (team !== null && m.team !== team)) return rows;
  if (m.deleted) return rows.filter((r) => r.name !== m.name);
  if (typeof (m as DatasetPublic).status !== "string") return rows;
  const i = rows.findIndex((r) => r.name === m.name);
  if (i >= 0) return rows.map((r, j) => (j === i ? (m as DatasetPublic) : r));
  return [...rows, m as DatasetPublic].sort(
    (a, b) => Number(b.builtin) - Number(a.builtin) || a.name.localeCompare(b.name),
  );
}
