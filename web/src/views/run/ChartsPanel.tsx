// The Charts tab: one uPlot panel per metric group, zoomable, with the alerts as markers.
import { useMemo } from "preact/hooks";
import type { AlertPublic } from "../../api/types";
import { LineChart, type ChartLine, type Marker } from "../../charts/LineChart";
import { type GroupState, type useRunCharts } from "../../charts/runCharts";
import { emptySeries } from "../../charts/series";
import { Empty, ErrorBox, Loading } from "../../ui/common";
import { chartMarkers } from "./step";

const linesCache = new WeakMap<Map<string, unknown>, ChartLine[]>();

function linesOf(g: GroupState): ChartLine[] {
  let l = linesCache.get(g.series);
  if (!l || l.length !== g.group.keys.length) {
    l = g.group.keys.map((k) => ({ label: k, series: g.series.get(k) ?? emptySeries(k) }));
    linesCache.set(g.series, l);
  }
  return l;
}

export function ChartsPanel({
  id,
  charts,
  alerts,
  running,
  onWidth,
  focusStep = null,
}: {
  id: string;
  charts: ReturnType<typeof useRunCharts>;
  alerts: AlertPublic[];
  running: boolean;
  onWidth: (w: number) => void;
  /** `?step=N`: a marker at that step on every chart. */
  focusStep?: number | null;
}) {
  const markers: Marker[] = useMemo(() => chartMarkers(alerts, focusStep), [alerts, focusStep]);

  return (
    <section aria-label="Charts">
      {charts.error ? (
        <ErrorBox error={charts.error} />
      ) : !charts.ready && !charts.groups.length ? (
        <Loading what="metrics" />
      ) : charts.groups.length === 0 ? (
        <Empty>
          {running ? "No metrics yet: the charts appear with the first logged step." : "This run logged no metrics."}
        </Empty>
      ) : (
        <div class="chart-grid">
          {charts.groups.map((g) => (
            <div key={g.group.id}>
              <LineChart
                id={g.group.id}
                title={g.group.title}
                lines={linesOf(g)}
                yRange={g.group.yRange}
                logY={g.group.logY}
                markers={markers}
                zoomed={g.zoom !== null}
                loading={g.fetching}
                syncKey={`run-${id}`}
                onZoom={(lo, hi) => charts.zoom(g.group.id, lo, hi)}
                onResetZoom={() => charts.resetZoom(g.group.id)}
                onWidth={onWidth}
              />
              {g.error && <div class="state error small">{g.error}</div>}
            </div>
          ))}
        </div>
      )}
      <p class="muted small">
        Drag across a chart to zoom into those steps (refetched at full detail); shaded bands are each bucket's min–max,
        so spikes stay visible. Red dashed lines are alerts; red triangles mark non-finite values
        {focusStep !== null ? `; the blue line is step ${focusStep}, the step this page was opened at` : ""}.
      </p>
    </section>
  );
}
