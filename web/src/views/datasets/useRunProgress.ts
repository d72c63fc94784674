// A scan or prepare run's progress, live: the run over REST (status, step, total, last_seq), then its own stream
// (the run page's LiveStream) for the engine's metrics ({step, total_steps, phase, images_per_s}) and status.
// `onEnd` is called once the run has ended, so the dataset it worked on is re-read.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api/client";
import { LiveStream, runStreamUrl, type LiveState, type StreamMessage } from "../../api/events";
import type { RunEvent } from "../../api/types";
import { foldMetrics, type RunProgress } from "./format";

const ENDED = ["succeeded", "failed", "cancelled", "lost"];

export function useRunProgress(runId: string | null, onEnd: () => void) {
  const [progress, setProgress] = useState<RunProgress | null>(null);
  const [live, setLive] = useState<LiveState>("connecting");
  const onEndRef = useRef(onEnd);
  onEndRef.current = onEnd;

  useEffect(() => {
    setProgress(null);
    if (!runId) return;
    const ctrl = new AbortController();
    let stream: LiveStream | null = null;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      stream?.close();
      onEndRef.current();
    };
    const reread = () =>
      api
        .run(runId, ctrl.signal)
        .then((r) => {
          setProgress((cur) => ({
            status: r.status,
            step: cur?.step ?? r.step ?? null,
            total: cur?.total ?? r.total_steps ?? null,
            phase: cur?.phase ?? null,
            imagesPerS: cur?.imagesPerS ?? null,
          }));
          if (ENDED.includes(r.status)) end();
          return r;
        })
        .catch(() => null);
    void reread().then((r) => {
      if (!r || ended) return;
      stream = new LiveStream({
        url: runStreamUrl(runId),
        mode: "seq",
        afterSeq: r.last_seq,
        onState: setLive,
        onMessage: (m: StreamMessage) => {
          const e = m.data as RunEvent;
          if (!e || typeof e !== "object") return;
          if (m.event === "metrics") setProgress((cur) => foldMetrics(cur, e.payload ?? {}));
          else if (m.event === "status" || m.event === "run") void reread(); // the server's word on its status
        },
      }).start();
    });
    return () => {
      ended = true;
      ctrl.abort();
      stream?.close();
    };
  }, [runId]);

  return { progress, live };
}
