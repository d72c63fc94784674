// One dataset, live: its new state comes on the team stream (`dataset` messages), and while a scan or prepare
// runs, that run's own stream gives its progress (useRunProgress); when the run ends the dataset is re-read too
// (its row is settled in the same batch of events, so this only covers a dropped message).
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { DatasetPublic } from "../../api/types";
import type { StreamMessage } from "../../api/events";
import { useTeamStream } from "../../api/team";
import { activeRunId, type DatasetMessage } from "./format";
import { useRunProgress } from "./useRunProgress";

export function useDataset(name: string) {
  const [dataset, setDataset] = useState<DatasetPublic | null>(null);
  const [removed, setRemoved] = useState(false);
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

  const team = useRef<string | null>(null);
  team.current = dataset?.team ?? null;
  const onMessage = useCallback(
    (m: StreamMessage) => {
      if (m.event === "resync") reread();
      if (m.event !== "dataset") return;
      const msg = m.data as DatasetMessage;
      if (!msg || msg.name !== name || (team.current !== null && msg.team !== team.current)) return;
      if (msg.deleted) setRemoved(true);
      else if (typeof msg.status === "string") setDataset(msg);
    },
    [name],
  );
  useTeamStream(onMessage);

  const runId = dataset ? activeRunId(dataset) : null;
  const { progress, live } = useRunProgress(runId, reread);
  return { dataset, setDataset, removed, error, reread, runId, progress, live };
}
