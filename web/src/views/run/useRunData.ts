// A run's data, kept current: the run, its alerts, evaluations (results and evaluation runs), checkpoints and
// (when wanted) its log over REST up to last_seq, then the run's own stream (metrics go to `push`, the charts)
// and the team stream (status changes of the run and its evaluation runs).
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import { LiveStream, runStreamUrl, type LiveState, type StreamMessage } from "../../api/events";
import { useTeamStream } from "../../api/team";
import type { AlertPublic, CheckpointPublic, EvalResultPublic, RunDetail, RunEvent, RunPublic } from "../../api/types";
import { pointsOfPayload, type LivePoint } from "../../charts/series";

const LOG_TYPES = ["status", "log", "alert", "checkpoint", "eval_result", "config", "rollback"];

/** What the run page does on a rollback event (the charts cut back to its checkpoint; the lineage refetches). */
export type OnRollback = (payload: { to_step?: unknown; branch?: unknown }) => void;

export function useRunData(
  id: string,
  push: (points: Map<string, LivePoint>) => void,
  wantLogs: boolean,
  onRollback?: OnRollback,
) {
  const [run, setRun] = useState<RunDetail | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [alerts, setAlerts] = useState<AlertPublic[]>([]);
  const [evals, setEvals] = useState<EvalResultPublic[]>([]);
  const [children, setChildren] = useState<RunPublic[]>([]);
  const [checkpoints, setCheckpoints] = useState<CheckpointPublic[]>([]);
  const [logs, setLogs] = useState<RunEvent[] | null>(null);
  const [live, setLive] = useState<LiveState>("connecting");
  /** Bumped when the run's lineage changes (a rollback, a fork's status): the Lineage panel refetches. */
  const [lineageTick, setLineageTick] = useState(0);
  const pushRef = useRef(push);
  pushRef.current = push;
  const rollbackRef = useRef(onRollback);
  rollbackRef.current = onRollback;
  const refreshTimer = useRef<Record<string, number>>({});

  const refresh = (what: "run" | "evals" | "checkpoints" | "alerts") => {
    // coalesce bursts of events into one request per kind
    if (refreshTimer.current[what]) return;
    refreshTimer.current[what] = window.setTimeout(() => {
      delete refreshTimer.current[what];
      if (what === "run")
        api
          .run(id)
          .then(setRun)
          .catch(() => {});
      if (what === "evals") {
        api
          .evals(id)
          .then(setEvals)
          .catch(() => {});
        api
          .runs({ parent_run_id: id, limit: 100 })
          .then((r) => setChildren(evaluationRuns(r.data)))
          .catch(() => {});
      }
      if (what === "checkpoints")
        api
          .checkpoints(id)
          .then(setCheckpoints)
          .catch(() => {});
      if (what === "alerts")
        api
          .alerts(id)
          .then(setAlerts)
          .catch(() => {});
    }, 250);
  };

  useEffect(() => {
    const ctrl = new AbortController();
    let stream: LiveStream | null = null;
    api
      .run(id, ctrl.signal)
      .then((r) => {
        setRun(r);
        // Everything up to last_seq comes over REST; the stream brings what follows.
        stream = new LiveStream({
          url: runStreamUrl(id),
          mode: "seq",
          afterSeq: r.last_seq,
          onState: setLive,
          onMessage: (m: StreamMessage) => onRunEvent(m),
        }).start();
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    api
      .alerts(id, ctrl.signal)
      .then(setAlerts)
      .catch(() => {});
    api
      .evals(id, ctrl.signal)
      .then(setEvals)
      .catch(() => {});
    api
      .checkpoints(id, ctrl.signal)
      .then(setCheckpoints)
      .catch(() => {});
    api
      .runs({ parent_run_id: id, limit: 100 }, ctrl.signal)
      .then((r) => setChildren(evaluationRuns(r.data)))
      .catch(() => {});
    return () => {
      ctrl.abort();
      stream?.close();
      Object.values(refreshTimer.current).forEach((t) => clearTimeout(t));
    };
  }, [id]);

  const onRunEvent = (m: StreamMessage) => {
    const e = m.data as RunEvent;
    if (!e || typeof e !== "object") return;
    if (m.event === "metrics") {
      pushRef.current(pointsOfPayload(e.payload ?? {}));
      const step = e.payload?.step;
      if (typeof step === "number")
        setRun((cur) => (cur && (cur.step ?? -1) < step + 1 ? { ...cur, step: step + 1 } : cur));
      return;
    }
    if (m.event === "rollback") {
      rollbackRef.current?.(e.payload ?? {});
      setLineageTick((t) => t + 1);
    }
    if (e.seq !== undefined && LOG_TYPES.includes(m.event)) setLogs((cur) => (cur ? [...cur, e] : cur));
    if (m.event === "status" || e.seq === undefined) refresh("run");
    if (m.event === "alert") refresh("alerts");
    if (m.event === "checkpoint") refresh("checkpoints");
    if (m.event === "eval_result") refresh("evals");
  };

  // Status changes of this run and its evaluation runs arrive on the team stream.
  const onTeam = useCallback(
    (m: StreamMessage) => {
      if (m.event !== "run") return;
      const r = m.data as RunPublic;
      if (r.id === id) {
        setRun((cur) => (cur ? { ...cur, ...r } : cur));
      } else if (r.parent_run_id === id && r.kind === "pretrain") {
        setLineageTick((t) => t + 1); // a fork of this run
      } else if (r.parent_run_id === id) {
        setChildren((cur) => {
          const i = cur.findIndex((c) => c.id === r.id);
          return i < 0 ? [r, ...cur] : cur.map((c) => (c.id === r.id ? { ...c, ...r } : c));
        });
        refresh("evals");
      }
    },
    [id],
  );
  useTeamStream(onTeam);

  useEffect(() => {
    if (!wantLogs || logs !== null) return;
    api
      .events(id, -1, 1000, LOG_TYPES)
      .then((r) => setLogs(r.data))
      .catch((e) =>
        setLogs([
          {
            run_id: id,
            seq: -1,
            time: Date.now() / 1000,
            type: "error",
            payload: { message: `could not load the log: ${(e as Error).message}` },
          },
        ]),
      );
  }, [wantLogs, id]);

  return { run, setRun, error, alerts, evals, children, setChildren, checkpoints, logs, live, lineageTick };
}

/** The runs whose parent is this run, less its forks (pretrain runs): its evaluations. */
export function evaluationRuns(runs: RunPublic[]): RunPublic[] {
  return runs.filter((r) => r.kind !== "pretrain");
}
