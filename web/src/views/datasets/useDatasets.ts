// The team's datasets, live from the team stream: a `dataset` message carries a dataset's new state (a scan or
// a packing that reported, or ended without reporting), and the runs doing that work report their progress as
// `run` messages (a row's bar). The list is re-read after a stream resync.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { DatasetPublic } from "../../api/types";
import type { StreamMessage } from "../../api/events";
import { useTeamStream } from "../../api/team";
import type { RunPublic } from "../../api/types";
import { activeRunId, applyDatasetMessage, type DatasetMessage, type RunProgress } from "./format";

export function useDatasets() {
  const [datasets, setDatasets] = useState<DatasetPublic[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);
  const [runs, setRuns] = useState<Record<string, RunProgress>>({});
  const watched = useRef<Set<string>>(new Set());
  watched.current = new Set((datasets ?? []).map(activeRunId).filter((id): id is string => !!id));

  useEffect(() => {
    const ctrl = new AbortController();
    api
      .datasets(ctrl.signal)
      .then((d) => {
        setDatasets(d);
        setError(null);
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctrl.abort();
  }, [reload]);

  const onMessage = useCallback((m: StreamMessage) => {
    if (m.event === "resync") {
      setReload((n) => n + 1);
      return;
    }
    if (m.event === "dataset") {
      // the list is one team's (the user's first): the built-in is always in it, so its team is known
      setDatasets((cur) => (cur ? applyDatasetMessage(cur, m.data as DatasetMessage, cur[0]?.team ?? null) : cur));
      return;
    }
    if (m.event !== "run") return;
    const r = m.data as RunPublic;
    if (!r || typeof r.id !== "string" || !watched.current.has(r.id)) return;
    setRuns((cur) => ({
      ...cur,
      [r.id]: { status: r.status, step: r.step ?? null, total: r.total_steps ?? null, phase: null, imagesPerS: null },
    }));
  }, []);
  const live = useTeamStream(onMessage);

  return { datasets, error, runs, live, retry: () => setReload((n) => n + 1) };
}
