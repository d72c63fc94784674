// Several runs' curves overlaid, one chart per metric key (the compare page and the study page): each
// run's downsampled series (min, max and last per bucket) fetched once, then drawn with LineChart.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import { Empty, ErrorBox, Loading } from "../ui/common";
import { groupKeys } from "./groups";
import { BRANCH_DASH, branchKey, type BranchLine } from "./lineage";
import { LineChart, PALETTE, type ChartLine, type Marker } from "./LineChart";
import { fromResponse, type Series } from "./series";

export interface OverlayRun {
  id: string;
  label: string;
  color?: string;
}

export const runColor = (i: number) => PALETTE[i % PALETTE.length];

/**
 * Fetch the runs' series: every key, or only `only` (keys, or prefixes ending in "/"). `reload` refetches
 * (the study page bumps it when a run finishes, not on every point).
 */
export function useOverlaySeries(ids: string[], only?: string[], reload = 0, buckets = 400) {
  const [series, setSeries] = useState<Map<string, Map<string, Series>> | null>(null); // run -> key -> series
  const [keys, setKeys] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (!ids.length) {
      setSeries(new Map());
      return;
    }
    const ctrl = new AbortController();
    const want = (k: string) => !only || only.some((o) => (o.endsWith("/") ? k.startsWith(o) : k === o));
    (async () => {
      const keyLists = (await Promise.all(ids.map((id) => api.metricKeys(id, ctrl.signal)))).map((ks) =>
        ks.filter(want),
      );
      const out = new Map<string, Map<string, Series>>();
      await Promise.all(
        ids.map(async (id, i) => {
          if (!keyLists[i].length) return;
          const res = await api.metrics(id, { keys: keyLists[i], buckets }, ctrl.signal);
          out.set(id, fromResponse(res).series);
        }),
      );
      const all = Array.from(new Set(keyLists.flat())).sort();
      setKeys(only ? [...only.filter((k) => all.includes(k)), ...all.filter((k) => !only.includes(k))] : all);
      setSeries(out);
      setError(null);
    })().catch((e) => {
      if ((e as Error).name !== "AbortError") setError(e);
    });
    return () => ctrl.abort();
  }, [ids.join(","), (only ?? []).join(","), reload]);
  return { series, keys, error };
}

/**
 * The abandoned curves of rollback branches (GET /runs/{id}/branches/{n}/metrics), for the given keys: branch key
 * (branchKey) -> metric key -> series. A branch that fails to load is left out (its run's own curves still show).
 */
export function useBranchSeries(branches: BranchLine[], keys: string[] | null, buckets = 400) {
  const [out, setOut] = useState<Map<string, Map<string, Series>>>(new Map());
  const sig = branches.map(branchKey).join(",");
  useEffect(() => {
    if (!branches.length || !keys?.length) {
      setOut(new Map());
      return;
    }
    const ctrl = new AbortController();
    const next = new Map<string, Map<string, Series>>();
    Promise.all(
      branches.map((b) =>
        api
          .branchMetrics(b.runId, b.branch, { keys, buckets }, ctrl.signal)
          .then((res) => void next.set(branchKey(b), fromResponse(res).series))
          .catch(() => {}),
      ),
    ).then(() => {
      if (!ctrl.signal.aborted) setOut(next);
    });
    return () => ctrl.abort();
  }, [sig, (keys ?? []).join(",")]);
  return out;
}

export function OverlayCharts({
  runs,
  only,
  reload,
  syncKey,
  branches = [],
  markers,
}: {
  runs: OverlayRun[];
  only?: string[];
  reload?: number;
  syncKey: string;
  /** Rollback branches drawn dashed in their run's colour (the compare page). */
  branches?: BranchLine[];
  /** Vertical markers on every chart (branch points). */
  markers?: Marker[];
}) {
  const { series, keys, error } = useOverlaySeries(
    runs.map((r) => r.id),
    only,
    reload,
  );
  const branchSeries = useBranchSeries(branches, series ? keys : null);
  if (error) return <ErrorBox error={error} />;
  if (!series) return <Loading what="curves" />;
  if (!keys.length) return <Empty>None of these runs has logged {only ? "these metrics" : "metrics"} yet.</Empty>;
  const groups = groupKeys(keys);
  const ordered = only ? keys : groups.flatMap((g) => g.keys);
  return (
    <div class="chart-grid">
      {ordered.map((k) => {
        const lines: ChartLine[] = runs.flatMap((r, i) => {
          const s = series.get(r.id)?.get(k);
          return s ? [{ label: r.label, series: s, color: r.color ?? runColor(i) }] : [];
        });
        for (const b of branches) {
          const s = branchSeries.get(branchKey(b))?.get(k);
          if (s && s.step.length) lines.push({ label: b.label, series: s, color: b.color, dash: BRANCH_DASH });
        }
        const g = groups.find((x) => x.keys.includes(k));
        return (
          <LineChart
            key={k}
            id={k}
            title={k}
            lines={lines}
            yRange={g?.yRange}
            logY={g?.logY}
            markers={markers}
            syncKey={syncKey}
          />
        );
      })}
    </div>
  );
}
