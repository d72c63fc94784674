// Small pieces the datasets list and a dataset's page share: the chips, a run's progress bar, mean/std swatches.
import type { DatasetPublic } from "../../api/types";
import { channelColour, fmtChannels, preparedChip, progressOf, statusChip, type RunProgress } from "./format";

export function DatasetStatusChip({ d }: { d: DatasetPublic }) {
  const c = statusChip(d);
  return (
    <span
      class={`badge status-${c.tone}`}
      data-testid="dataset-status"
      data-status={d.status}
      title={d.status === "failed" ? (d.error ?? undefined) : undefined}
    >
      {c.text}
    </span>
  );
}

export function PreparedChip({ d }: { d: DatasetPublic }) {
  const c = preparedChip(d);
  return (
    <span class={`badge status-${c.tone}`} data-testid="dataset-prepared" data-prepare-status={d.prepare_status}>
      {c.text}
    </span>
  );
}

/** A scan or prepare run's progress: the bar (when the total is known) and what it is doing. */
export function RunProgressBar({ progress, wide }: { progress: RunProgress | null; wide?: boolean }) {
  const p = progressOf(progress);
  return (
    <span
      class={`progress dataset-progress${wide ? " wide" : ""}`}
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={p.pct === null ? undefined : Math.round(p.pct)}
      aria-valuetext={p.text}
      title={p.text}
      data-testid="dataset-progress"
      data-pct={p.pct === null ? "" : p.pct.toFixed(1)}
    >
      <span class="bar" style={{ width: `${p.pct ?? 0}%` }} />
      <span>{p.text}</span>
    </span>
  );
}

const CHANNELS = ["R", "G", "B"];

/** Per-channel values as swatches with their numbers: one grey swatch when the channels agree. */
export function ChannelSwatches({ values, label }: { values: number[] | null | undefined; label: string }) {
  if (!values?.length) return <span class="muted">—</span>;
  const grey = values.every((x) => Math.abs(x - values[0]) < 5e-4);
  const shown = grey ? [values[0]] : values;
  return (
    <span class="swatches" aria-label={`${label}: ${fmtChannels(values)}`}>
      {shown.map((v, i) => (
        <span key={i} class="swatch-num">
          <span
            class="swatch big"
            style={{
              background: grey ? channelColour([v]) : channelColour(CHANNELS.map((_, j) => (j === i ? v : 0))),
            }}
            aria-hidden="true"
          />
          {!grey && <span class="muted small">{CHANNELS[i]}</span>}
          <span class="mono">{v.toFixed(3)}</span>
        </span>
      ))}
    </span>
  );
}
