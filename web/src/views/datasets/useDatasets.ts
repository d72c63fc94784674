// The team's datasets, kept current while any is scanning or preparing: the runs doing that work report their
// progress on the team stream (a row's bar), and the list is re-read when one of them ends, after a resync, and
// every few seconds while any is busy (the dataset's own row changes on the server, not on the stream).
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { DatasetPublic } from "../../api/datasets";
import type { StreamMessage } from "../../api/events";
import { useTeamStream } from "../../api/team";
import type { RunPublic } from "../../api/types";
import { activeRunId, isBusy, type RunProgress } from "./format";

export const POLL_MS = 3000;
const ENDED = ["succeeded", "failed", "cancelled", "lost"];

export function useDatasets() {
  const [datasets, setDatasets] = useState<DatasetPublic[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [reload, setReload] = useState(0);
  const [runs, setRuns] = useState<Record<string, RunProgress>>({});
  const watched = useRef<Set<string>>(new Set());

  useEffect(() => {
    const ctrl = new AbortController();
    setLoading(true);
    api
      .datasets(ctrl.signal)
      .then((d) => {
        setDatasets(d);
        setError(null);
        setLoading(false);
      })
      .catch((e) => {
        if ((e as Error).name === "AbortError") return;
        setError(e);
        setLoading(false);
      });
    return () => ctrl.abort();
  }, [reload]);

  const busy = (datasets ?? []).some(isBusy);
  watched.current = new Set((datasets ?? []).map(activeRunId).filter((id): id is string => !!id));
  useEffect(() => {
    if (!busy) return;
    const t = window.setInterval(() => setReload((n) => n + 1), POLL_MS);
    return () => clearInterval(t);
  }, [busy]);

  const onMessage = useCallback((m: StreamMessage) => {
    if (m.event === "resync") {
      setReload((n) => n + 1);
      return;
    }
    if (m.event !== "run") return;
    const r = m.data as RunPublic;
    if (!r || typeof r.id !== "string" || !watched.current.has(r.id)) return;
    setRuns((cur) => ({
      ...cur,
      [r.id]: { status: r.status, step: r.step ?? null, total: r.total_steps ?? null, phase: null, imagesPerS: null },
    }));
    if (ENDED.includes(r.status)) setReload((n) => n + 1);
  }, []);
  const live = useTeamStream(onMessage);

  return { datasets, error, loading, runs, live, retry: () => setReload((n) => n + 1) };
}
