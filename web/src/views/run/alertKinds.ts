// What each alert kind means, in words a user reads on the Alerts tab and on the notification rules: the
// engine's detectors (mocov3_core/monitor/detectors.py) and the server's stall watchdog. A kind the UI does not
// know yet still shows, by its own name.

export interface AlertKindInfo {
  label: string;
  /** One sentence: what the signal is and why it matters. */
  explain: string;
}

export const ALERT_KINDS: Record<string, AlertKindInfo> = {
  non_finite: {
    label: "Non-finite value",
    explain: "The loss or a gradient became NaN or infinite: the weights are no longer trustworthy after this step.",
  },
  loss_spike: {
    label: "Loss spike",
    explain: "The loss jumped far above its recent baseline (robust z-score over the monitor's window).",
  },
  grad_spike: {
    label: "Gradient spike",
    explain:
      "A gradient norm (first the patch projection's) jumped far above its baseline: the instability MoCo v3 traces to the first layer.",
  },
  knn_dip: {
    label: "kNN accuracy dip",
    explain: "The kNN monitor's accuracy fell well below its best so far: the representation got worse.",
  },
  spike_then_dip: {
    label: "Spike, then dip",
    explain: "A gradient spike followed by a kNN dip: the paper's signature of a run that lost its representation.",
  },
  update_spike: {
    label: "Update-size spike",
    explain:
      "The update-to-weight ratio ‖Δw‖/‖w‖ of a parameter group jumped above its baseline; update spikes come before loss spikes, and are larger in the lower layers.",
  },
  entropy_collapse: {
    label: "Attention entropy collapse",
    explain:
      "The attention entropy of the first or last block fell sharply: attention concentrating on a few tokens marks ViT training instability (Zhai et al. 2023).",
  },
  rank_collapse: {
    label: "Representation collapse",
    explain:
      "The effective rank (RankMe) or the per-dimension std of the monitor's features fell: the embedding is collapsing, usually before the kNN accuracy shows it.",
  },
  stall: {
    label: "Stalled run",
    explain:
      "The run's heartbeats are alive but no new step came for many times its usual step time: a hung collective or a stuck data loader.",
  },
};

/** Every kind, in the order the rules form lists them. */
export const ALERT_KIND_NAMES = Object.keys(ALERT_KINDS);

export function alertLabel(kind: string): string {
  return ALERT_KINDS[kind]?.label ?? kind.replace(/_/g, " ");
}

export function alertExplain(kind: string): string | null {
  return ALERT_KINDS[kind]?.explain ?? null;
}
