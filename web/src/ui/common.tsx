import type { ComponentChildren, JSX } from "preact";
import type { LiveState } from "../api/events";
import { onLinkClick } from "../router";

export function Link(props: JSX.HTMLAttributes<HTMLAnchorElement> & { href: string }) {
  return <a {...props} onClick={onLinkClick} />;
}

export function StatusBadge({ status }: { status: string }) {
  return (
    <span class={`badge status-${status}`} data-testid="run-status" data-status={status}>
      {status}
    </span>
  );
}

const LIVE_TEXT: Record<LiveState, string> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  offline: "offline",
  closed: "offline",
};

export function LiveIndicator({ state }: { state: LiveState }) {
  return (
    <span
      class={`live live-${state}`}
      data-testid="live-indicator"
      data-state={state}
      role="status"
      aria-live="polite"
      title={state === "live" ? "Receiving updates as they happen" : "Not receiving updates; retrying"}
    >
      <span class="dot" aria-hidden="true" />
      {LIVE_TEXT[state]}
    </span>
  );
}

export function Loading({ what }: { what?: string }) {
  return (
    <div class="state loading" role="status" data-testid="loading">
      Loading{what ? ` ${what}` : ""}…
    </div>
  );
}

export function ErrorBox({ error, retry }: { error: unknown; retry?: () => void }) {
  const msg = error instanceof Error ? error.message : String(error);
  return (
    <div class="state error" role="alert" data-testid="error">
      <strong>Something went wrong:</strong> {msg}
      {retry && (
        <button type="button" class="btn small" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return (
    <div class="state empty" data-testid="empty">
      {children}
    </div>
  );
}

export function timeAgo(iso: string | number | null | undefined, now = Date.now()): string {
  if (iso === null || iso === undefined) return "—";
  const t =
    typeof iso === "number"
      ? iso * 1000
      : Date.parse(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  if (!Number.isFinite(t)) return "—";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function parseTime(iso: string | null | undefined): number {
  if (!iso) return NaN;
  return Date.parse(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
}

export function fmtNum(v: unknown, digits = 4): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string") return v;
  if (typeof v !== "number") return JSON.stringify(v);
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}

export function fmtAcc(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${v.toFixed(2)}`;
}

export function fmtBytes(b: number | null | undefined): string {
  if (b === null || b === undefined) return "—";
  const gib = b / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${(b / 2 ** 20).toFixed(0)} MiB`;
}

export function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 12)}…` : id;
}
