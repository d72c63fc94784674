// Shapes of the public REST API (/api/v1), mirrored from server/*/schemas.py.

export type RunKind = "pretrain" | "knn" | "linear" | "finetune";
export type EvalKind = "knn" | "linear" | "finetune";
export type RunStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled" | "lost";
export const RUN_STATUSES: RunStatus[] = ["queued", "running", "succeeded", "failed", "cancelled", "lost"];
export const RUN_KINDS: RunKind[] = ["pretrain", "knn", "linear", "finetune"];

/** A metric value: a number, or 'nan' / 'inf' / '-inf' (JSON has no non-finite numbers). */
export type WireValue = number | string;

export interface RunPublic {
  id: string;
  kind: string;
  name: string | null;
  status: string;
  project: string;
  team: string;
  owner: string;
  tags: string[];
  notes: string;
  queue: string;
  parent_run_id: string | null;
  checkpoint: string | null;
  attempt: number;
  worker_id: string | null;
  created_at: string;
  queued_at: string;
  started_at: string | null;
  finished_at: string | null;
  last_heartbeat: string | null;
  cancel_requested: boolean;
  error: string | null;
  message: string | null;
  step: number | null;
  total_steps: number | null;
  last_seq: number;
  best_knn_top1: number | null;
  best_linear_top1: number | null;
  best_finetune_top1: number | null;
  /** Stability alerts raised (absent on older servers). */
  alert_count?: number;
  model?: string | null;
  framework?: string | null;
  dataset?: string | null;
  /** The preset and dotted overrides the run was submitted with (newer servers). */
  preset?: string | null;
  overrides?: Record<string, unknown> | null;
}

export interface RunDetail extends RunPublic {
  spec: Record<string, unknown>;
}

export interface RunsPublic {
  data: RunPublic[];
  count: number;
}

export interface PresetPublic {
  name: string;
  kind: string;
  overrides: Record<string, unknown>;
}

export interface MetricSeriesWire {
  key: string;
  step: number[];
  value: WireValue[];
  min?: WireValue[] | null;
  max?: WireValue[] | null;
  count?: number[] | null;
  /** NaN points per bucket (newer servers): a NaN inside a bucket whose last value is finite. */
  nan?: number[] | null;
}

export interface RunMetrics {
  run_id: string;
  buckets: number | null;
  bucket_width: number | null;
  start: number | null;
  end: number | null;
  truncated: boolean;
  series: MetricSeriesWire[];
}

export interface RunEvent {
  run_id: string;
  seq: number;
  time: number;
  type: string;
  payload: Record<string, unknown>;
}

export interface EventsPublic {
  data: RunEvent[];
  last_seq: number | null;
}

export interface AlertPublic {
  run_id: string;
  seq: number;
  time: number;
  step: number | null;
  kind: string;
  severity: string;
  metric: string | null;
  message: string;
  remedy: string;
  payload: Record<string, unknown>;
}

export interface CheckpointPublic {
  run_id: string;
  step: number;
  seq: number;
  time: number;
  path: string;
  healthy: boolean;
}

export interface EvalResultPublic {
  run_id: string;
  seq: number;
  time: number;
  protocol: string;
  top1: number | null;
  top5: number | null;
  payload: Record<string, unknown>;
}

export interface GpuTelemetry {
  index?: number;
  name?: string;
  memory_used?: number | null;
  memory_total?: number | null;
  utilization?: number | null;
  temperature?: number | null;
}

export interface WorkerPublic {
  id: string;
  host: string | null;
  queue: string | null;
  version: string | null;
  online: boolean;
  state: string | null;
  current_run_id: string | null;
  first_seen: string;
  last_seen: string;
  telemetry: Record<string, unknown> & {
    gpus?: GpuTelemetry[];
    cpu_percent?: number;
    cpu_count?: number;
    memory_used?: number;
    memory_total?: number;
  };
}

export interface WorkersPublic {
  data: WorkerPublic[];
  count: number;
}

export interface Me {
  user: { id: number; name: string; email: string | null; is_admin: boolean };
  teams: { id: number; name: string }[];
}

export interface ValidationItem {
  loc: (string | number)[];
  msg: string;
  type?: string;
}

// ----------------------------------------------------------------- studies and the leaderboard

export interface AxisPublic {
  name: string;
  labels: string[];
}

export interface PaperPublic {
  source: string;
  setting: string;
  protocol: string;
  notes: string;
}

export interface TemplatePublic {
  name: string;
  title: string;
  description: string;
  axes: AxisPublic[];
  /** Per axis, each value's overrides. */
  values: Record<string, unknown>[][];
  paper: PaperPublic | null;
  /** One axis: label -> top-1; two axes: "label1 | label2" -> top-1 (ImageNet). */
  paper_numbers: Record<string, number>;
}

export interface EvalCell {
  run_id: string;
  status: string;
  top1: number | null;
}

export interface StudyRow {
  labels: string[];
  overrides: Record<string, unknown>;
  run: RunPublic | null;
  evals: Record<string, EvalCell>;
  knn_curve: [number, WireValue][];
  paper: number | null;
}

export interface StudyPublic {
  id: string;
  name: string;
  template: string | null;
  title: string | null;
  project: string;
  team: string;
  owner: string;
  created_at: string;
  preset: string | null;
  overrides: Record<string, unknown>;
  axes: AxisPublic[];
  evaluations: string[];
  notes: string;
  runs: number;
  progress: Record<string, number>;
  evals_done: number;
  evals_total: number;
  /** active: a run (or an evaluation to queue) has not ended; cancelled: the study was cancelled. */
  status: "active" | "ended" | "cancelled";
  cancelled_at: string | null;
}

export interface StudyDetail extends StudyPublic {
  rows: StudyRow[];
  paper: PaperPublic | null;
}

export interface AxisIn {
  name?: string;
  path?: string;
  values: unknown[];
}

export interface StudyCreate {
  name: string;
  template?: string;
  preset?: string;
  overrides: Record<string, unknown>;
  axes?: AxisIn[];
  evaluations: EvalKind[];
  project: string;
  tags: string[];
  queue?: string;
  notes: string;
}

export interface LeaderboardRow {
  rank: number;
  protocol: string;
  dataset: string | null;
  top1: number;
  top5: number | null;
  eval_run_id: string;
  pretrain_run_id: string | null;
  name: string | null;
  model: string | null;
  framework: string | null;
  project: string;
  owner: string;
  study_id: string | null;
  config: Record<string, unknown>;
  finished_at: string | null;
}

export interface Leaderboard {
  data: LeaderboardRow[];
}
