// The team's workers, kept live: GET /workers, then each heartbeat on the team stream replaces its worker (a
// resync refetches). Shared by the Workers page and a run's Machines panel; `onBeat` sees every heartbeat.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import type { LiveState, StreamMessage } from "../../api/events";
import { useTeamStream } from "../../api/team";
import type { WorkerPublic } from "../../api/types";

export type OnBeat = (id: string, lastSeen: string, telemetry: WorkerPublic["telemetry"]) => void;

export interface LiveWorkers {
  workers: WorkerPublic[] | null;
  error: unknown;
  /** Bumped at each (re)load: a resync or `retry`. */
  reload: number;
  retry: () => void;
  live: LiveState;
}

export function useWorkers(onBeat?: OnBeat): LiveWorkers {
  const [workers, setWorkers] = useState<WorkerPublic[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);
  const onBeatRef = useRef(onBeat);
  onBeatRef.current = onBeat;

  useEffect(() => {
    const ctrl = new AbortController();
    api
      .workers(ctrl.signal)
      .then((r) => {
        setWorkers(r.data);
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
    if (m.event !== "worker") return;
    const d = m.data as {
      id: string;
      host: string | null;
      queue: string | null;
      version: string | null;
      last_seen: string;
      current_run_id: string | null;
      telemetry: WorkerPublic["telemetry"];
    };
    onBeatRef.current?.(d.id, d.last_seen, d.telemetry ?? {});
    setWorkers((cur) => {
      const list = cur ?? [];
      const state = typeof d.telemetry?.state === "string" ? (d.telemetry.state as string) : null;
      const i = list.findIndex((w) => w.id === d.id);
      const w: WorkerPublic = {
        ...(i >= 0 ? list[i] : { first_seen: d.last_seen }),
        id: d.id,
        host: d.host,
        queue: d.queue,
        version: d.version,
        last_seen: d.last_seen,
        current_run_id: d.current_run_id,
        telemetry: d.telemetry,
        online: state !== "stopped",
        state,
      } as WorkerPublic;
      return i >= 0 ? list.map((x, j) => (j === i ? w : x)) : [...list, w];
    });
  }, []);
  const live = useTeamStream(onMessage);

  const retry = useCallback(() => setReload((n) => n + 1), []);
  return { workers, error, reload, retry, live };
}

/** The current time, ticking every `ms` (for "4s ago" and staleness). */
export function useNow(ms = 2000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}
