// The one place that talks to /api/v1: base URL, credentials and the handling of 401 live here.
import type {
  AlertPublic,
  ChannelPublic,
  ChannelWrite,
  CheckpointPublic,
  DatasetCreate,
  DatasetPrepare,
  DatasetPublic,
  DeliveryPublic,
  EvalKind,
  EvalResultPublic,
  EventsPublic,
  ForkRequest,
  Leaderboard,
  LineagePublic,
  Me,
  PresetPublic,
  RunDetail,
  RunMetrics,
  RunsPublic,
  StudyCreate,
  StudyDetail,
  StudyPublic,
  TemplatePublic,
  ValidationItem,
  WorkerHistory,
  WorkersPublic,
} from "./types";

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(
    public status: number,
    public detail: unknown,
  ) {
    super(ApiError.describe(status, detail));
  }

  /** FastAPI's validation list ({loc, msg}) when the server sent one. */
  get validation(): ValidationItem[] {
    return Array.isArray(this.detail) ? (this.detail as ValidationItem[]) : [];
  }

  static describe(status: number, detail: unknown): string {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail))
      return detail.map((d: ValidationItem) => `${(d.loc ?? []).join(".")}: ${d.msg}`).join("; ");
    return `HTTP ${status}`;
  }
}

type Unauthorized = () => void;
let onUnauthorized: Unauthorized = () => {};
/** Called on every 401 (the app shows the login page). */
export function setUnauthorizedHandler(fn: Unauthorized): void {
  onUnauthorized = fn;
}

export async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(API + path, {
      method,
      credentials: "same-origin",
      headers:
        body === undefined
          ? { Accept: "application/json" }
          : { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if ((err as Error).name === "AbortError") throw err;
    throw new ApiError(0, "the server cannot be reached");
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = text;
  }
  if (!res.ok) {
    if (res.status === 401) onUnauthorized();
    const detail = data && typeof data === "object" && "detail" in data ? (data as { detail: unknown }).detail : data;
    throw new ApiError(res.status, detail ?? res.statusText);
  }
  return data as T;
}

export function qs(params: Record<string, string | number | boolean | null | undefined>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  }
  return parts.length ? `?${parts.join("&")}` : "";
}

export interface RunQuery {
  status?: string;
  kind?: string;
  project?: string;
  owner?: string;
  tag?: string;
  q?: string;
  parent_run_id?: string;
  skip?: number;
  limit?: number;
}

export interface MetricQuery {
  keys: string[];
  buckets?: number;
  start?: number;
  end?: number;
}

const enc = encodeURIComponent;

export const api = {
  me: (signal?: AbortSignal) => request<Me>("GET", "/me", undefined, signal),
  runs: (q: RunQuery, signal?: AbortSignal) => request<RunsPublic>("GET", `/runs${qs({ ...q })}`, undefined, signal),
  run: (id: string, signal?: AbortSignal) => request<RunDetail>("GET", `/runs/${enc(id)}`, undefined, signal),
  presets: () => request<PresetPublic[]>("GET", "/presets"),
  schema: (kind: string) => request<Record<string, unknown>>("GET", `/schema/${enc(kind)}`),
  submit: (body: Record<string, unknown>) => request<RunDetail>("POST", "/runs", body),
  cancel: (id: string) => request<RunDetail>("POST", `/runs/${enc(id)}/cancel`),
  resume: (id: string) => request<RunDetail>("POST", `/runs/${enc(id)}/resume`),
  evaluate: (id: string, kind: EvalKind, checkpoint_step?: number) =>
    request<RunDetail>(
      "POST",
      `/runs/${enc(id)}/evaluate`,
      checkpoint_step === undefined ? { kind } : { kind, checkpoint_step },
    ),
  metricKeys: (id: string, signal?: AbortSignal) =>
    request<string[]>("GET", `/runs/${enc(id)}/metric-keys`, undefined, signal),
  metrics: (id: string, q: MetricQuery, signal?: AbortSignal) =>
    request<RunMetrics>(
      "GET",
      `/runs/${enc(id)}/metrics${qs({ keys: q.keys.join(","), buckets: q.buckets, start: q.start, end: q.end })}`,
      undefined,
      signal,
    ),
  alerts: (id: string, signal?: AbortSignal) =>
    request<AlertPublic[]>("GET", `/runs/${enc(id)}/alerts`, undefined, signal),
  checkpoints: (id: string, signal?: AbortSignal) =>
    request<CheckpointPublic[]>("GET", `/runs/${enc(id)}/checkpoints`, undefined, signal),
  evals: (id: string, signal?: AbortSignal) =>
    request<EvalResultPublic[]>("GET", `/runs/${enc(id)}/evals`, undefined, signal),
  events: (id: string, afterSeq: number, limit: number, types?: string[], signal?: AbortSignal) =>
    request<EventsPublic>(
      "GET",
      `/runs/${enc(id)}/events${qs({ after_seq: afterSeq, limit, types: types?.join(",") })}`,
      undefined,
      signal,
    ),
  workers: (signal?: AbortSignal) => request<WorkersPublic>("GET", "/workers", undefined, signal),
  workerHistory: (id: string, signal?: AbortSignal) =>
    request<WorkerHistory>("GET", `/workers/${enc(id)}/history`, undefined, signal),
  studyTemplates: (signal?: AbortSignal) => request<TemplatePublic[]>("GET", "/study-templates", undefined, signal),
  studies: (skip: number, limit: number, signal?: AbortSignal) =>
    request<StudyPublic[]>("GET", `/studies${qs({ skip, limit })}`, undefined, signal),
  study: (id: string, signal?: AbortSignal) => request<StudyDetail>("GET", `/studies/${enc(id)}`, undefined, signal),
  createStudy: (body: StudyCreate) => request<StudyDetail>("POST", "/studies", body),
  cancelStudy: (id: string) => request<StudyDetail>("POST", `/studies/${enc(id)}/cancel`),
  leaderboard: (q: LeaderboardQuery, signal?: AbortSignal) =>
    request<Leaderboard>("GET", `/leaderboard${qs({ ...q })}`, undefined, signal),
  datasets: (signal?: AbortSignal) => request<DatasetPublic[]>("GET", "/datasets", undefined, signal),
  dataset: (name: string, signal?: AbortSignal) =>
    request<DatasetPublic>("GET", `/datasets/${enc(name)}`, undefined, signal),
  addDataset: (body: DatasetCreate) => request<DatasetPublic>("POST", "/datasets", body),
  prepareDataset: (name: string, body: DatasetPrepare) =>
    request<DatasetPublic>("POST", `/datasets/${enc(name)}/prepare`, body),
  removeDataset: (name: string) => request<void>("DELETE", `/datasets/${enc(name)}`),
  channels: (signal?: AbortSignal) => request<ChannelPublic[]>("GET", "/channels", undefined, signal),
  createChannel: (body: ChannelWrite) => request<ChannelPublic>("POST", "/channels", body),
  updateChannel: (id: number, body: ChannelWrite) =>
    request<ChannelPublic>("PATCH", `/channels/${enc(String(id))}`, body),
  deleteChannel: (id: number) => request<void>("DELETE", `/channels/${enc(String(id))}`),
  /** Sends a test message now (tried once): the delivery with its attempt. */
  testChannel: (id: number) => request<DeliveryPublic>("POST", `/channels/${enc(String(id))}/test`),
  /** The channel's messages, newest first, each with its attempts; `before` = a delivery id (the next page). */
  deliveries: (id: number, q: { limit?: number; before?: number }, signal?: AbortSignal) =>
    request<DeliveryPublic[]>("GET", `/channels/${enc(String(id))}/deliveries${qs({ ...q })}`, undefined, signal),
  fork: (id: string, body: ForkRequest) => request<RunDetail>("POST", `/runs/${enc(id)}/fork`, body),
  lineage: (id: string, signal?: AbortSignal) =>
    request<LineagePublic>("GET", `/runs/${enc(id)}/lineage`, undefined, signal),
  branchMetrics: (id: string, branch: number, q: MetricQuery, signal?: AbortSignal) =>
    request<RunMetrics>(
      "GET",
      `/runs/${enc(id)}/branches/${branch}/metrics${qs({ keys: q.keys.join(","), buckets: q.buckets, start: q.start, end: q.end })}`,
      undefined,
      signal,
    ),
};

export interface LeaderboardQuery {
  protocol?: string;
  dataset?: string;
  project?: string;
}

/**
 * The login page's form: the token goes in a JSON body (never in a URL, so never in the browser's history) and
 * the server answers with the session cookie. -> null when signed in, else why not.
 */
export async function loginWithToken(token: string): Promise<string | null> {
  let res: Response;
  try {
    res = await fetch("/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch {
    return "the server cannot be reached";
  }
  if (res.ok) return null;
  return res.status === 401 ? "invalid-token" : `HTTP ${res.status}`;
}

/** Export links (opened by the browser, so the session cookie goes with them). */
export const exportUrl = {
  studyMarkdown: (id: string) => `${API}/studies/${enc(id)}/table.md`,
  leaderboard: (format: "csv" | "md", q: LeaderboardQuery) => `${API}/leaderboard.${format}${qs({ ...q })}`,
  /** A dataset's grid of training images (JPEG); `v` changes when the dataset does, so a rescan shows anew. */
  datasetSamples: (name: string, v?: string) => `${API}/datasets/${enc(name)}/samples.jpg${qs({ v })}`,
};
