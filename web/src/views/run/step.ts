// `?step=N` on the run page (the link a notification carries): the step, its marker on every chart, and the
// alerts at that step (the one scrolled into view).
import type { AlertPublic } from "../../api/types";
import type { Marker } from "../../charts/LineChart";

/** The step a run page was opened at, or null: a whole number ≥ 0 only (anything else is ignored, not an error). */
export function parseStep(query: URLSearchParams | string): number | null {
  const q = typeof query === "string" ? new URLSearchParams(query) : query;
  const raw = q.get("step");
  if (raw === null || !/^\s*\d{1,12}\s*$/.test(raw)) return null;
  const n = Number(raw);
  return Number.isSafeInteger(n) ? n : null;
}

/** The charts' markers: every alert with a step (red, labelled by kind), then the opened step (blue). */
export function chartMarkers(alerts: AlertPublic[], step: number | null): Marker[] {
  const out: Marker[] = alerts
    .filter((a) => a.step !== null)
    .map((a) => ({ step: a.step!, label: a.kind, kind: "alert" as const }));
  if (step !== null) out.push({ step, label: `step ${step}`, kind: "step" });
  return out;
}

/** The alerts at exactly that step, latest first (what the notification was about). */
export function alertsAtStep(alerts: AlertPublic[], step: number | null): AlertPublic[] {
  if (step === null) return [];
  return alerts.filter((a) => a.step === step).reverse();
}
