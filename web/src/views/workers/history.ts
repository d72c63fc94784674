// A worker's telemetry over time, as the charts draw it: the heartbeats the API keeps
// (GET /workers/{id}/history, oldest first) joined with the ones the team stream brings live, and the
// lines of the three charts (utilisation and memory in %, temperature in °C) with time (unix seconds) as x.
import type { GpuTelemetry, HeartbeatPublic, WorkerTelemetry } from "../../api/types";
import type { ChartLine } from "../../charts/LineChart";
import type { Series } from "../../charts/series";

/** The newest heartbeats kept per worker: the API's default page (an hour at one beat per 5 s). */
export const HISTORY_LIMIT = 720;

export interface Sample {
  /** Unix seconds. */
  time: number;
  telemetry: WorkerTelemetry;
}

export const samplesOf = (beats: HeartbeatPublic[]): Sample[] =>
  beats.map((b) => ({ time: b.time, telemetry: b.telemetry }));

/**
 * The API's history followed by the live beats newer than its last one (a live beat's time comes from its
 * ISO last_seen, a hair off the stored float, so times are not compared for equality), the newest `limit` kept.
 */
export function mergeSamples(fetched: Sample[], live: Sample[], limit = HISTORY_LIMIT): Sample[] {
  const last = fetched.length ? fetched[fetched.length - 1].time : -Infinity;
  const out = fetched.concat(live.filter((s) => s.time > last + 0.5));
  return out.length > limit ? out.slice(out.length - limit) : out;
}

/** One sample appended live: unchanged (the same array) when it is not newer than the last one. */
export function appendSample(list: Sample[], s: Sample, limit = HISTORY_LIMIT): Sample[] {
  if (list.length && s.time <= list[list.length - 1].time) return list;
  const next = list.length >= limit ? list.slice(list.length - limit + 1) : list.slice();
  next.push(s);
  return next;
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const pct = (used: unknown, total: unknown): number | null => {
  const u = num(used);
  const t = num(total);
  return u !== null && t ? (100 * u) / t : null;
};

/** A line of the points where `pick` gives a number (a missing reading is a gap, not a NaN marker). */
function line(key: string, samples: Sample[], pick: (t: WorkerTelemetry) => number | null): Series {
  const s: Series = { key, step: [], value: [], min: [], max: [], count: [] };
  for (const { time, telemetry } of samples) {
    const v = pick(telemetry);
    if (v === null) continue;
    s.step.push(time);
    s.value.push(v);
    s.min.push(v);
    s.max.push(v);
    s.count.push(1);
  }
  return s;
}

const gpusOf = (t: WorkerTelemetry): GpuTelemetry[] => (Array.isArray(t.gpus) ? t.gpus : []);

/** The GPU indices seen over the samples, in order (a GPU is charted by its index, its position if none). */
function gpuKeys(samples: Sample[]): number[] {
  const keys = new Set<number>();
  for (const s of samples) gpusOf(s.telemetry).forEach((g, i) => keys.add(g.index ?? i));
  return Array.from(keys).sort((a, b) => a - b);
}

function gpuAt(t: WorkerTelemetry, key: number): GpuTelemetry | undefined {
  const gpus = gpusOf(t);
  return gpus.find((g, i) => (g.index ?? i) === key);
}

export interface HistoryCharts {
  utilisation: ChartLine[];
  memory: ChartLine[];
  temperature: ChartLine[];
}

/** The lines of the three charts; a line with no point at all is left out (a CPU worker has no GPU lines). */
export function historyCharts(samples: Sample[]): HistoryCharts {
  const gpus = gpuKeys(samples);
  const keep = (lines: ChartLine[]) => lines.filter((l) => l.series.step.length > 0);
  return {
    utilisation: keep([
      { label: "CPU", series: line("cpu", samples, (t) => num(t.cpu_percent)) },
      ...gpus.map((k) => ({
        label: `GPU ${k}`,
        series: line(`gpu${k}.util`, samples, (t) => num(gpuAt(t, k)?.utilization)),
      })),
    ]),
    memory: keep([
      { label: "RAM", series: line("ram", samples, (t) => pct(t.memory_used, t.memory_total)) },
      ...gpus.map((k) => ({
        label: `GPU ${k}`,
        series: line(`gpu${k}.mem`, samples, (t) => {
          const g = gpuAt(t, k);
          return pct(g?.memory_used, g?.memory_total);
        }),
      })),
    ]),
    temperature: keep(
      gpus.map((k) => ({
        label: `GPU ${k}`,
        series: line(`gpu${k}.temp`, samples, (t) => num(gpuAt(t, k)?.temperature)),
      })),
    ),
  };
}
