// One dataset, kept current while it is scanned or prepared: the run doing it streams its progress (useRunProgress)
// and the dataset is re-read when that run ends, and every few seconds meanwhile (its row changes on the server).
import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { DatasetPublic } from "../../api/datasets";
import { activeRunId, isBusy } from "./format";
import { POLL_MS } from "./useDatasets";
import { useRunProgress } from "./useRunProgress";

export function useDataset(name: string) {
  const [dataset, setDataset] = useState<DatasetPublic | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);
  const reread = useCallback(() => setReload((n) => n + 1), []);

  useEffect(() => {
    const ctrl = new AbortController();
    api
      .dataset(name, ctrl.signal)
      .then((d) => {
        setDataset(d);
        setError(null);
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctrl.abort();
  }, [name, reload]);

  const busy = dataset ? isBusy(dataset) : false;
  useEffect(() => {
    if (!busy) return;
    const t = window.setInterval(reread, POLL_MS);
    return () => clearInterval(t);
  }, [busy]);

  const runId = dataset ? activeRunId(dataset) : null;
  const { progress, live } = useRunProgress(runId, reread);
  return { dataset, setDataset, error, reread, runId, progress, live };
}
