// One uPlot panel: a line of each bucket's last value, and its min–max range as a band, so that a
// one-step spike stays visible at any zoom. Non-finite values are drawn as red markers at the top
// edge, alerts as dashed vertical lines on the same step axis. Dragging selects a step range, which the
// owner refetches at finer resolution (onZoom).
import { useEffect, useMemo, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { fmtNum } from "../ui/common";
import { align, positiveOnly, type Series } from "./series";

export const PALETTE = [
  "#2f7ed8",
  "#e8590c",
  "#2b8a3e",
  "#ae3ec9",
  "#c92a2a",
  "#1098ad",
  "#e67700",
  "#5c7cfa",
  "#868e96",
  "#d6336c",
];

export interface ChartLine {
  label: string;
  series: Series;
  color?: string;
  /** A dashed line (a rolled-back branch's abandoned curve): uPlot's dash pattern in CSS pixels. */
  dash?: number[];
}

/** A vertical line at a step: an alert (red, dashed), the step the page was opened at (`?step=N`), a branch point. */
export interface Marker {
  step: number;
  label: string;
  kind?: "alert" | "step" | "branch";
  color?: string;
  /** What the marker stands for in full (the chart draws the short label). */
  detail?: string;
}

const MARKER_COLOR: Record<NonNullable<Marker["kind"]>, string> = {
  alert: "rgba(224,49,49,0.9)",
  step: "rgba(47,111,208,0.95)",
  branch: "rgba(112,72,232,0.9)",
};

export interface LineChartProps {
  id: string;
  title: string;
  lines: ChartLine[];
  markers?: Marker[];
  yRange?: [number, number];
  logY?: boolean;
  height?: number;
  zoomed?: boolean;
  loading?: boolean;
  onZoom?: (lo: number, hi: number) => void;
  onResetZoom?: () => void;
  /** Reports the plot width in CSS pixels (so the owner asks for about that many buckets). */
  onWidth?: (w: number) => void;
  syncKey?: string;
  /** x is unix seconds (a time axis, the readout shows the time) instead of a step. */
  xTime?: boolean;
}

/** Tick labels with enough digits to tell neighbouring ticks apart (momentum 0.9905 vs 0.991). */
function tickText(v: number | null): string {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(Number(v.toPrecision(6)));
}

function withAlpha(hex: string, a: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

/** Whether any y column (after the x column) holds a value: a log chart of zeros draws nothing. */
function hasPositive(data: uPlot.AlignedData): boolean {
  return data.slice(1).some((col) => (col as (number | null)[]).some((v) => v !== null && v > 0));
}

function dataOf(lines: ChartLine[], logY: boolean) {
  const a = align(lines.map((l) => l.series));
  const data: (number | null)[][] = [a.x];
  for (const c of a.cols)
    if (logY) data.push(positiveOnly(c.value), positiveOnly(c.min), positiveOnly(c.max));
    else data.push(c.value, c.min, c.max);
  return { aligned: a, data: data as uPlot.AlignedData };
}

export function LineChart(p: LineChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plotEl = useRef<HTMLDivElement>(null);
  const readout = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef(p);
  latest.current = p;
  const nonFinite = useRef<ReturnType<typeof align>["nonFinite"]>([]);
  const computed = useMemo(() => dataOf(p.lines, !!p.logY), [p.lines, p.logY]);
  nonFinite.current = computed.aligned.nonFinite;
  const sig = p.lines.map((l) => `${l.label}${l.dash ? "~" : ""}`).join("|") + (p.logY ? "|log" : "");

  // (Re)create the plot when the set of lines changes.
  useEffect(() => {
    const el = plotEl.current!;
    const { aligned, data } = computed;
    const series: uPlot.Series[] = [{ label: p.xTime ? "time" : "step" }];
    const bands: uPlot.Band[] = [];
    p.lines.forEach((l, i) => {
      const color = l.color ?? PALETTE[i % PALETTE.length];
      const base = 1 + i * 3;
      series.push({
        label: l.label,
        stroke: color,
        width: 1.5,
        spanGaps: true,
        points: { show: false },
        ...(l.dash ? { dash: l.dash } : {}),
      });
      series.push({
        label: `${l.label} min`,
        stroke: withAlpha(color, 0.35),
        width: 0.5,
        spanGaps: true,
        points: { show: false },
      });
      series.push({
        label: `${l.label} max`,
        stroke: withAlpha(color, 0.35),
        width: 0.5,
        spanGaps: true,
        points: { show: false },
      });
      bands.push({ series: [base + 2, base + 1], fill: withAlpha(color, 0.16) });
    });
    const draw = (u: uPlot) => {
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, width, height);
      ctx.clip();
      const dpr = uPlot.pxRatio;
      let row = 0; // labels of neighbouring markers go on staggered rows so that they do not overprint
      for (const m of latest.current.markers ?? []) {
        const x = u.valToPos(m.step, "x", true);
        if (x < left || x > left + width) continue;
        const labelY = top + (11 + 12 * (row++ % 3)) * dpr;
        const color = m.color ?? MARKER_COLOR[m.kind ?? "alert"];
        ctx.strokeStyle = color;
        ctx.setLineDash(m.kind === "step" ? [] : [4 * dpr, 3 * dpr]);
        ctx.lineWidth = (m.kind === "step" ? 2 : 1.5) * dpr;
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = color;
        ctx.font = `${m.kind === "step" ? "bold " : ""}${10 * dpr}px system-ui, sans-serif`;
        ctx.fillText(m.label, x + 3 * dpr, labelY);
      }
      for (const nf of nonFinite.current) {
        const x = u.valToPos(nf.step, "x", true);
        if (x < left || x > left + width) continue;
        const y = top + 2 * dpr;
        ctx.fillStyle = "#e03131";
        ctx.beginPath();
        ctx.moveTo(x - 5 * dpr, y);
        ctx.lineTo(x + 5 * dpr, y);
        ctx.lineTo(x, y + 8 * dpr);
        ctx.closePath();
        ctx.fill();
        ctx.font = `bold ${10 * dpr}px system-ui, sans-serif`;
        ctx.fillText(Number.isNaN(nf.value) ? "NaN" : nf.value > 0 ? "+inf" : "-inf", x + 6 * dpr, y + 8 * dpr);
      }
      ctx.restore();
    };
    const css = getComputedStyle(el);
    const axisColor = css.getPropertyValue("--fg-muted").trim() || "#5d6675";
    const gridColor = "rgba(128,128,128,0.18)";
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: p.height ?? 190,
      series,
      bands,
      legend: { show: false },
      scales: {
        x: { time: !!p.xTime },
        y: p.logY ? { distr: 3 } : p.yRange ? { range: p.yRange } : {},
      },
      axes: [
        { stroke: axisColor, grid: { stroke: gridColor }, ticks: { stroke: gridColor } },
        {
          stroke: axisColor,
          grid: { stroke: gridColor },
          ticks: { stroke: gridColor },
          size: 64,
          values: (_u, vals) => vals.map(tickText),
        },
      ],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        sync: p.syncKey ? { key: p.syncKey } : undefined,
      },
      hooks: {
        draw: [
          (u) => {
            draw(u);
            const b = box.current;
            if (b && !b.dataset.drawn && (u.data[0]?.length ?? 0) > 0) b.dataset.drawn = "1";
          },
        ],
        setSelect: [
          (u) => {
            if (u.select.width < 3) return;
            const lo = u.posToVal(u.select.left, "x");
            const hi = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            latest.current.onZoom?.(Math.max(0, Math.floor(lo)), Math.ceil(hi));
          },
        ],
        setCursor: [
          (u) => {
            const r = readout.current;
            if (!r) return;
            const i = u.cursor.idx;
            if (i === null || i === undefined) {
              r.textContent = "";
              return;
            }
            const x = u.data[0][i];
            const parts = [latest.current.xTime ? new Date(x * 1000).toLocaleTimeString() : `step ${x}`];
            latest.current.lines.forEach((l, k) => {
              const v = u.data[1 + k * 3][i];
              const hi = u.data[3 + k * 3][i];
              const lo = u.data[2 + k * 3][i];
              if (v === null || v === undefined) return;
              const range = lo !== hi && lo !== null && hi !== null ? ` [${fmtNum(lo, 3)}…${fmtNum(hi, 3)}]` : "";
              parts.push(`${l.label} ${fmtNum(v)}${range}`);
            });
            r.textContent = parts.join("   ");
          },
        ],
      },
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    box.current!.dataset.points = String(aligned.points);
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(w - u.width) > 1) u.setSize({ width: w, height: u.height });
      latest.current.onWidth?.(w);
    });
    ro.observe(el);
    p.onWidth?.(el.clientWidth);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [sig]);

  // New data: setData only (no re-creation).
  useEffect(() => {
    const u = plot.current;
    if (!u) return;
    const { aligned, data } = computed;
    u.setData(data, true);
    box.current!.dataset.points = String(aligned.points);
  }, [computed, p.markers]);

  const nf = nonFinite.current.length;
  const stepMarkers = (p.markers ?? []).filter((m) => m.kind === "step" || m.kind === "branch").map((m) => m.step);
  return (
    <figure
      class="chart"
      ref={box}
      data-testid={`chart-${p.id}`}
      data-points="0"
      data-zoomed={p.zoomed ? "1" : "0"}
      data-log={p.logY ? "1" : undefined}
      data-markers={stepMarkers.length ? stepMarkers.join(",") : undefined}
    >
      <figcaption>
        <span class="chart-title">{p.title}</span>
        <span class="legend">
          {p.lines.map((l, i) => (
            <span class={`legend-item${l.dash ? " dashed" : ""}`} key={l.label}>
              <span class="swatch" style={{ background: l.color ?? PALETTE[i % PALETTE.length] }} />
              {l.label}
            </span>
          ))}
          {p.logY && computed.aligned.points > 0 && !hasPositive(computed.data) && (
            <span class="muted small" data-testid="log-empty">
              no value above 0 to draw on a log scale
            </span>
          )}
          {nf > 0 && (
            <span class="nonfinite-note" data-testid="nonfinite-marker" title="Buckets whose value is not finite">
              ▼ {nf} non-finite
            </span>
          )}
        </span>
        {p.logY && (
          <span class="muted small" title="Logarithmic y axis">
            log
          </span>
        )}
        {p.loading && <span class="muted small">loading…</span>}
        {p.zoomed && p.onResetZoom && (
          <button type="button" class="btn small" onClick={p.onResetZoom} data-testid="chart-reset-zoom">
            Reset zoom
          </button>
        )}
      </figcaption>
      <div class="plot" ref={plotEl} />
      <div class="readout" ref={readout} aria-live="off" />
    </figure>
  );
}
