// The runs table's two kNN columns, kept apart: the monitor's probe (a training-time kNN on a few hundred
// images, the run's metric knn_top1, at the step it last ran) and kNN evaluations (eval runs over the whole
// split: the run's own result, or its evaluations' best). best_knn_top1 mixes the two, so the table does not use it.
import type { RunPublic } from "../../api/types";
import { fmtAcc } from "../../ui/common";

export interface KnnCell {
  text: string;
  title: string;
}

/** The probe's latest top-1 with its step; a NaN probe shows as such; "—" when the run has no probe. */
export function knnProbeCell(r: Pick<RunPublic, "knn_probe_top1" | "knn_probe_step">): KnnCell {
  const step = r.knn_probe_step;
  if (step === null || step === undefined) return { text: "—", title: "no kNN probe (monitor.knn_every)" };
  const top1 = r.knn_probe_top1;
  const value = top1 === null || top1 === undefined ? "NaN" : fmtAcc(top1);
  return { text: `${value} (step ${step})`, title: `monitor kNN probe at step ${step}: ${value}` };
}

/** The best kNN evaluation top-1: the run's own (a kNN evaluation) or its evaluations'. */
export function knnEvalCell(r: Pick<RunPublic, "kind" | "knn_eval_top1">): KnnCell {
  const top1 = r.knn_eval_top1;
  if (top1 === null || top1 === undefined) {
    return { text: "—", title: r.kind === "pretrain" ? "no kNN evaluation yet" : "no kNN result" };
  }
  return { text: fmtAcc(top1), title: r.kind === "knn" ? "this kNN evaluation's top-1" : "best kNN evaluation top-1" };
}
