// The team's registered datasets (/api/v1/datasets). Hand-written from the contract until the server's
// OpenAPI document has them; then these become aliases of the generated schemas, as types.ts does.

export type DatasetStatus = "scanning" | "ready" | "failed";
export type PrepareStatus = "none" | "preparing" | "prepared" | "failed";

export interface SplitCount {
  images: number;
}

/** By split: train, and val when there is one. */
export type DatasetSplits = { [split: string]: SplitCount };

/** [height, width] in pixels, of the images the statistics were measured on. */
export type HeightWidth = [number, number];

export interface ImageSize {
  min: HeightWidth;
  median: HeightWidth;
  max: HeightWidth;
}

export interface PackedInfo {
  root: string;
  short_side?: number | null;
  quality?: number | null;
  shards?: number | null;
  bytes?: number | null;
  splits?: DatasetSplits | null;
  seconds?: number | null;
}

export interface DatasetPublic {
  name: string;
  team: string;
  kind: string;
  root: string | null;
  status: DatasetStatus;
  error: string | null;
  builtin: boolean;
  created_at: string;
  updated_at: string;
  splits: DatasetSplits | null;
  classes: string[] | null;
  num_classes: number | null;
  mean: number[] | null;
  std: number[] | null;
  image_size: ImageSize | null;
  stats_images: number | null;
  sample_labels: number[] | null;
  has_samples: boolean;
  prepare_status: PrepareStatus;
  packed: PackedInfo | null;
  scan_run_id: string | null;
  prepare_run_id: string | null;
}

export interface DatasetCreate {
  name: string;
  path: string;
  /** null: the server detects the reader from the folder. */
  kind: string | null;
}

export interface PrepareRequest {
  short_side?: number;
  quality?: number;
}

/** The readers a registered dataset may use (mocov3_core/config.py DatasetName, less `packed`). */
export const DATASET_KINDS = ["imagefolder", "fashion_mnist", "mnist", "cifar10", "cifar100", "idx", "npz"] as const;
