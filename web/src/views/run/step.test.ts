import { describe, expect, it } from "vitest";
import type { AlertPublic } from "../../api/types";
import { alertsAtStep, chartMarkers, parseStep } from "./step";

const alert = (seq: number, kind: string, step: number | null): AlertPublic => ({
  run_id: "r",
  seq,
  time: 0,
  step,
  kind,
  severity: "warning",
  metric: null,
  message: `${kind} at ${step}`,
  remedy: "",
  payload: {},
});

describe("?step=N on the run page", () => {
  it("reads a whole step and ignores anything else", () => {
    expect(parseStep("?step=120")).toBe(120);
    expect(parseStep(new URLSearchParams("tab=alerts&step=0"))).toBe(0);
    expect(parseStep("?step= 7 ")).toBe(7);
    for (const bad of ["", "?step=", "?step=-3", "?step=1.5", "?step=abc", "?step=1e3", "?step=99999999999999999"])
      expect(parseStep(bad)).toBeNull();
  });

  it("puts a step marker after the alert markers, on every chart", () => {
    const alerts = [alert(1, "grad_spike", 40), alert(2, "stall", null), alert(3, "update_spike", 38)];
    expect(chartMarkers(alerts, null)).toEqual([
      { step: 40, label: "grad_spike", kind: "alert" },
      { step: 38, label: "update_spike", kind: "alert" },
    ]);
    const m = chartMarkers(alerts, 38);
    expect(m[m.length - 1]).toEqual({ step: 38, label: "step 38", kind: "step" });
    expect(m).toHaveLength(3);
  });

  it("finds the alerts at exactly that step, latest first", () => {
    const alerts = [alert(1, "grad_spike", 40), alert(2, "loss_spike", 41), alert(3, "spike_then_dip", 40)];
    expect(alertsAtStep(alerts, 40).map((a) => a.seq)).toEqual([3, 1]);
    expect(alertsAtStep(alerts, 39)).toEqual([]);
    expect(alertsAtStep(alerts, null)).toEqual([]);
  });
});
