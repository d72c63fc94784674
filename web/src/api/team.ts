// The team's stream (run status, alerts, worker heartbeats), one connection shared by every page.
import { useEffect, useState } from "preact/hooks";
import { LiveStream, teamStreamUrl, type LiveState, type StreamMessage } from "./events";

type Listener = (msg: StreamMessage) => void;
const listeners = new Set<Listener>();
const stateListeners = new Set<(s: LiveState) => void>();
let stream: LiveStream | null = null;
let state: LiveState = "connecting";
let unauthorized: () => void = () => {};

export function setTeamUnauthorized(fn: () => void): void {
  unauthorized = fn;
}

function ensure(): void {
  if (stream) return;
  stream = new LiveStream({
    url: teamStreamUrl,
    mode: "id",
    onMessage: (m) => listeners.forEach((l) => l(m)),
    onState: (s) => {
      state = s;
      stateListeners.forEach((l) => l(s));
    },
    onUnauthorized: () => {
      stream = null;
      unauthorized();
    },
  }).start();
  window.addEventListener("online", () => stream?.kick());
}

/** Subscribe to the team stream while the calling component is mounted; returns its live state. */
export function useTeamStream(onMessage: Listener): LiveState {
  const [s, setS] = useState<LiveState>(state);
  useEffect(() => {
    ensure();
    listeners.add(onMessage);
    stateListeners.add(setS);
    setS(state);
    return () => {
      listeners.delete(onMessage);
      stateListeners.delete(setS);
    };
  }, [onMessage]);
  return s;
}

export function closeTeamStream(): void {
  stream?.close();
  stream = null;
}
