// `?step=N` (a notification's link): a note above the tabs that names the step and what fired there, scrolled
// into view once the alerts are in; the charts carry a marker at the step.
import { useEffect, useRef } from "preact/hooks";
import type { AlertPublic } from "../../api/types";
import { alertLabel } from "./alertKinds";
import { alertsAtStep } from "./step";

export function StepFocus({
  step,
  alerts,
  onShowAlerts,
}: {
  step: number;
  alerts: AlertPublic[];
  onShowAlerts: () => void;
}) {
  const at = alertsAtStep(alerts, step);
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    ref.current?.scrollIntoView({ block: "center" });
  }, [step, at.length]);
  return (
    <div class="notice step-focus" ref={ref} data-testid="step-focus" data-step={step} role="status">
      <b>Step {step}</b>
      {at.length === 0 ? (
        <span> is marked on every chart (blue line).</span>
      ) : (
        <>
          <span> (blue line on every chart): </span>
          {at.map((a) => (
            <span key={a.seq} class={`step-alert sev-${a.severity}`} data-testid="step-alert" data-kind={a.kind}>
              <b>{alertLabel(a.kind)}</b> — {a.message}
            </span>
          ))}
          <button type="button" class="linklike" onClick={onShowAlerts} data-testid="step-show-alerts">
            evidence and remedy
          </button>
        </>
      )}
    </div>
  );
}
