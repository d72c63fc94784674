// Each worker's telemetry history: fetched once per worker (and again after a resync, `reload`), then
// extended by the live beats (`addBeat`, from the team stream's `worker` messages).
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { WorkerTelemetry } from "../../api/types";
import { parseTime } from "../../ui/common";
import { appendSample, mergeSamples, samplesOf, type Sample } from "./history";

export function useWorkerHistory(
  ids: string[],
  reload: number,
): [Record<string, Sample[]>, (id: string, lastSeen: string, telemetry: WorkerTelemetry) => void] {
  const [history, setHistory] = useState<Record<string, Sample[]>>({});
  const fetched = useRef({ reload: -1, ids: new Set<string>() });
  const key = ids.join("\n");

  useEffect(() => {
    if (fetched.current.reload !== reload) fetched.current = { reload, ids: new Set() };
    const seen = fetched.current.ids;
    const ctrl = new AbortController();
    const pending = new Set<string>();
    for (const id of key ? key.split("\n") : []) {
      if (seen.has(id)) continue;
      seen.add(id);
      pending.add(id);
      api
        .workerHistory(id, ctrl.signal)
        .then((h) => {
          pending.delete(id);
          setHistory((cur) => ({ ...cur, [id]: mergeSamples(samplesOf(h.data), cur[id] ?? []) }));
        })
        .catch((e) => {
          pending.delete(id);
          // no history (an error): the charts start from the live beats
          if ((e as Error).name !== "AbortError") setHistory((cur) => ({ ...cur, [id]: cur[id] ?? [] }));
        });
    }
    return () => {
      ctrl.abort();
      pending.forEach((id) => seen.delete(id)); // aborted before it answered: fetched again by the next run
    };
  }, [key, reload]);

  const addBeat = useCallback((id: string, lastSeen: string, telemetry: WorkerTelemetry) => {
    const time = parseTime(lastSeen) / 1000;
    if (!Number.isFinite(time)) return;
    setHistory((cur) => ({ ...cur, [id]: appendSample(cur[id] ?? [], { time, telemetry }) }));
  }, []);

  return [history, addBeat];
}
