// A worker's telemetry history in three small uPlot charts (utilisation and memory on a fixed 0-100 %
// scale, GPU temperature), x = time; the cursor is synced across the three.
import { useMemo } from "preact/hooks";
import { LineChart } from "../../charts/LineChart";
import { historyCharts, type Sample } from "./history";

export function WorkerHistory({ workerId, samples }: { workerId: string; samples: Sample[] | undefined }) {
  const charts = useMemo(() => historyCharts(samples ?? []), [samples]);
  const common = { xTime: true, height: 110, syncKey: `worker-${workerId}` };
  return (
    <div class="worker-history" data-testid="worker-history" data-samples={samples?.length ?? 0}>
      {samples === undefined ? (
        <div class="muted small">loading history…</div>
      ) : charts.utilisation.length === 0 && charts.memory.length === 0 ? (
        <div class="muted small">no history yet</div>
      ) : (
        <>
          {charts.utilisation.length > 0 && (
            <LineChart
              id={`worker-${workerId}-util`}
              title="Utilisation (%)"
              lines={charts.utilisation}
              yRange={[0, 100]}
              {...common}
            />
          )}
          {charts.memory.length > 0 && (
            <LineChart
              id={`worker-${workerId}-mem`}
              title="Memory (% used)"
              lines={charts.memory}
              yRange={[0, 100]}
              {...common}
            />
          )}
          {charts.temperature.length > 0 && (
            <LineChart
              id={`worker-${workerId}-temp`}
              title="GPU temperature (°C)"
              lines={charts.temperature}
              {...common}
            />
          )}
        </>
      )}
    </div>
  );
}
