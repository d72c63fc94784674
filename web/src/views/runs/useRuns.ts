// One page of the team's runs for the filters, reloaded when they change (or after a stream resync), and kept
// current from the team stream: status and progress of the rows, alert counts, new runs on the first page.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api, type RunQuery } from "../../api/client";
import type { StreamMessage } from "../../api/events";
import { useTeamStream } from "../../api/team";
import type { RunPublic } from "../../api/types";
import { bumpAlerts, matches, type AlertMessage } from "./live";

export const PAGE = 50;

export function useRuns(filters: RunQuery, page: number) {
  const [rows, setRows] = useState<RunPublic[] | null>(null);
  const [count, setCount] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [newRuns, setNewRuns] = useState(0);
  const key = JSON.stringify([filters, page]);
  const [reload, setReload] = useState(0);
  const filtersRef = useRef(filters);
  filtersRef.current = filters;
  const pageRef = useRef(page);
  pageRef.current = page;

  useEffect(() => {
    const ctrl = new AbortController();
    setLoading(true);
    api
      .runs({ ...filters, skip: page * PAGE, limit: PAGE }, ctrl.signal)
      .then((r) => {
        setRows(r.data);
        setCount(r.count);
        setError(null);
        setNewRuns(0);
        setLoading(false);
      })
      .catch((e) => {
        if ((e as Error).name === "AbortError") return;
        setError(e);
        setLoading(false);
      });
    return () => ctrl.abort();
  }, [key, reload]);

  const onMessage = useCallback((m: StreamMessage) => {
    if (m.event === "resync") {
      setReload((n) => n + 1);
      return;
    }
    if (m.event === "alert") {
      setRows((cur) => (cur ? bumpAlerts(cur, m.data as AlertMessage) : cur));
      return;
    }
    if (m.event !== "run") return; // status changes, and (newer servers) throttled progress: the same shape
    const run = m.data as RunPublic;
    if (!run || typeof run.id !== "string") return;
    setRows((cur) => {
      if (!cur) return cur;
      const i = cur.findIndex((r) => r.id === run.id);
      if (i >= 0) {
        const next = cur.slice();
        next[i] = { ...cur[i], ...run };
        return next;
      }
      if (run.status === "queued" && matches(run, filtersRef.current)) {
        if (pageRef.current === 0) {
          setCount((c) => c + 1);
          return [run, ...cur].slice(0, PAGE);
        }
        setNewRuns((n) => n + 1);
      }
      return cur;
    });
  }, []);
  const live = useTeamStream(onMessage);

  return { rows, count, error, loading, newRuns, retry: () => setReload((n) => n + 1), live };
}
