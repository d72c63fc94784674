// One run: live status, the machines it is placed on, charts, alerts, evaluations, config, logs and checkpoints.
import { useState } from "preact/hooks";
import { api, ApiError } from "../api/client";
import type { EvalKind, RunDetail } from "../api/types";
import { DEFAULT_BUCKETS, useRunCharts } from "../charts/runCharts";
import { useRoute } from "../router";
import { ErrorBox, Link, Loading } from "../ui/common";
import { AlertsPanel } from "./AlertsPanel";
import { ChartsPanel } from "./run/ChartsPanel";
import { CheckpointsPanel } from "./run/CheckpointsPanel";
import { EvalsPanel } from "./run/EvalsPanel";
import { ForkDialog } from "./run/ForkDialog";
import { LineagePanel, useLineage } from "./run/LineagePanel";
import { LogsPanel } from "./run/LogsPanel";
import { showMachines } from "./run/machines";
import { MachinesPanel } from "./run/MachinesPanel";
import { RunHeader, TERMINAL } from "./run/RunHeader";
import { parseStep } from "./run/step";
import { StepFocus } from "./run/StepFocus";
import { useRunData } from "./run/useRunData";

const TABS = ["charts", "alerts", "evals", "config", "logs", "checkpoints", "lineage"] as const;
type Tab = (typeof TABS)[number];

export function RunPage({ id }: { id: string }) {
  const route = useRoute();
  const focusStep = parseStep(route.query);
  const [tab, setTab] = useState<Tab>(() => {
    const t = new URLSearchParams(window.location.search).get("tab");
    return ((TABS as readonly string[]).includes(t ?? "") ? t : "charts") as Tab;
  });
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [forking, setForking] = useState(false);
  const [width, setWidth] = useState(DEFAULT_BUCKETS);
  const charts = useRunCharts(id, width);
  const { run, setRun, error, alerts, evals, children, setChildren, checkpoints, logs, live, lineageTick } = useRunData(
    id,
    charts.push,
    tab === "logs",
    (p) => {
      if (typeof p.to_step === "number") charts.rollback(p.to_step);
    },
  );
  const lineage = useLineage(id, lineageTick);

  const act = async (name: string, fn: () => Promise<RunDetail>, after?: (r: RunDetail) => void) => {
    setBusy(name);
    setActionError(null);
    try {
      const r = await fn();
      after?.(r);
    } catch (e) {
      setActionError(e instanceof ApiError ? e.message : String(e));
    }
    setBusy(null);
  };

  const evaluate = (kind: EvalKind) =>
    act(
      `eval-${kind}`,
      () => api.evaluate(id, kind),
      (child) => {
        setChildren((cur) => [child, ...cur.filter((c) => c.id !== child.id)]);
      },
    );

  if (error) {
    return (
      <main class="page">
        <ErrorBox
          error={
            error instanceof ApiError && error.status === 404
              ? "This run does not exist or is not visible to you."
              : error
          }
        />
        <p>
          <Link href="/">Back to the runs</Link>
        </p>
      </main>
    );
  }
  if (!run)
    return (
      <main class="page">
        <Loading what="run" />
      </main>
    );

  const running = !TERMINAL.includes(run.status);
  const isPretrain = run.kind === "pretrain";
  const tabs: [Tab, string][] = [
    ["charts", "Charts"],
    ["alerts", `Alerts (${alerts.length})`],
    ["evals", `Evaluations (${evals.length + children.filter((c) => !evals.some((e) => e.run_id === c.id)).length})`],
    ["config", "Config"],
    ["logs", "Logs"],
    ["checkpoints", `Checkpoints (${checkpoints.length})`],
  ];
  if (isPretrain) {
    const l = lineage.lineage;
    const n = l ? (l.forks?.length ?? 0) + (l.branches?.length ?? 0) + (l.parent ? 1 : 0) : 0;
    tabs.push(["lineage", `Lineage${n ? ` (${n})` : ""}`]);
  }

  return (
    <main class="page run-page">
      <RunHeader
        run={run}
        live={live}
        busy={busy}
        parent={lineage.lineage?.parent ?? null}
        canFork={isPretrain && checkpoints.length > 0}
        onFork={() => setForking(true)}
        onCancel={() => act("cancel", () => api.cancel(id), setRun)}
        onResume={() => act("resume", () => api.resume(id), setRun)}
      />
      {forking && <ForkDialog run={run} checkpoints={checkpoints} onClose={() => setForking(false)} />}
      {run.error && (
        <div class="state error" role="alert" data-testid="run-error">
          <b>Error:</b> {run.error}
        </div>
      )}
      {run.message && !run.error && <div class="notice">{run.message}</div>}
      {actionError && (
        <div class="state error" role="alert" data-testid="action-error">
          {actionError}
        </div>
      )}
      {focusStep !== null && tab !== "alerts" && (
        <StepFocus step={focusStep} alerts={alerts} onShowAlerts={() => setTab("alerts")} />
      )}
      {alerts.length > 0 && tab !== "alerts" && (
        <div class="alert-strip" role="status">
          ⚠ {alerts.length} alert{alerts.length > 1 ? "s" : ""}: latest <b>{alerts[alerts.length - 1].kind}</b> at step{" "}
          {alerts[alerts.length - 1].step ?? "?"} —
          <button type="button" class="linklike" onClick={() => setTab("alerts")}>
            see what fired and what to do
          </button>
        </div>
      )}
      {showMachines(run) && <MachinesPanel run={run} />}
      <div class="tabs" role="tablist">
        {tabs.map(([t, label]) => (
          <button
            type="button"
            role="tab"
            key={t}
            aria-selected={tab === t}
            class={tab === t ? "active" : ""}
            data-testid={`tab-${t}`}
            onClick={() => setTab(t)}
          >
            {label}
          </button>
        ))}
      </div>
      {tab === "charts" && (
        <ChartsPanel
          id={id}
          charts={charts}
          alerts={alerts}
          running={running}
          focusStep={focusStep}
          onWidth={(w) => setWidth((cur) => (Math.abs(cur - Math.round(w)) > 50 ? Math.round(w) : cur))}
        />
      )}
      {tab === "alerts" && <AlertsPanel alerts={alerts} checkpoints={checkpoints} focusStep={focusStep} />}
      {tab === "evals" && (
        <EvalsPanel
          run={run}
          evals={evals}
          children={children}
          busy={busy}
          onEvaluate={evaluate}
          isPretrain={isPretrain}
          hasCheckpoint={checkpoints.length > 0 || !!run.checkpoint}
        />
      )}
      {tab === "config" && (
        <section aria-label="Config">
          <pre class="config" data-testid="run-config">
            {JSON.stringify(run.spec, null, 2)}
          </pre>
        </section>
      )}
      {tab === "logs" && <LogsPanel logs={logs} />}
      {tab === "checkpoints" && <CheckpointsPanel checkpoints={checkpoints} />}
      {tab === "lineage" && <LineagePanel id={id} lineage={lineage.lineage} error={lineage.error} />}
    </main>
  );
}
