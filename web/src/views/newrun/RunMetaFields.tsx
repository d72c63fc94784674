// The run's own fields above the generated form: kind, preset (a pretraining run) or the checkpoint an
// evaluation reads (its pretraining run and step), project, tags, queue, notes, and what a pretraining run asks
// for: GPUs on each machine and machines (optim.batch_size stays the global batch, split over them all), and
// the dataset it reads (one of the team's registered ones, by name).
import { RUN_KINDS } from "../../api/types";
import { Link } from "../../ui/common";
import { DATA_NAME, DEFAULT_DATASET, datasetFacts, replacedByDataset } from "./dataset";
import { checkpointSteps, runLabel } from "./source";
import type { RunForm } from "./useRunForm";

type ErrorOf = (k: string) => preact.JSX.Element | "" | undefined;

/** An evaluation's checkpoint: a pretraining run of the team's, then one of its steps (default: the latest). */
function SourcePicker({ form, metaError }: { form: RunForm; metaError: ErrorOf }) {
  const { sourceRuns, sourceRun, setSourceRun, checkpoints, checkpointStep, setCheckpointStep } = form;
  const steps = checkpoints ? checkpointSteps(checkpoints) : [];
  const known = !sourceRun || !sourceRuns || sourceRuns.some((r) => r.id === sourceRun);
  return (
    <>
      <label>
        Pretraining run <span class="muted small">(its checkpoint is evaluated)</span>
        <select
          value={sourceRun}
          data-testid="field-run_id"
          disabled={!sourceRuns}
          onChange={(e) => setSourceRun((e.target as HTMLSelectElement).value)}
        >
          <option value="">(none: a random-init or raw-pixel baseline)</option>
          {!known && <option value={sourceRun}>{sourceRun}</option>}
          {(sourceRuns ?? []).map((r) => (
            <option key={r.id} value={r.id}>
              {runLabel(r)}
            </option>
          ))}
        </select>
        {metaError("run_id")}
      </label>
      {sourceRun && (
        <label>
          Checkpoint step
          <select
            value={checkpointStep}
            data-testid="field-checkpoint_step"
            disabled={!checkpoints}
            onChange={(e) => setCheckpointStep((e.target as HTMLSelectElement).value)}
          >
            <option value="">{steps.length ? `latest (step ${steps[0]})` : "latest"}</option>
            {steps.map((s) => (
              <option key={s} value={String(s)}>
                step {s}
              </option>
            ))}
          </select>
          {checkpoints && !steps.length && (
            <span class="muted small" data-testid="no-checkpoints">
              This run has saved no checkpoint yet.
            </span>
          )}
          {metaError("checkpoint_step")}
        </label>
      )}
    </>
  );
}

/** The dataset: the team's ready ones by name; its size beside it unless it is the default. */
function DatasetPicker({ form, metaError }: { form: RunForm; metaError: ErrorOf }) {
  const { datasets, datasetsError, dataset, impliedDataset, setDataset, overrides, base } = form;
  const known = !dataset || (datasets ?? []).some((d) => d.name === dataset);
  const chosen = (datasets ?? []).find((d) => d.name === dataset);
  const replaced = replacedByDataset(overrides, DATA_NAME in overrides);
  const own = typeof base["data.dataset"] === "string" ? base["data.dataset"] : "the data fields";
  return (
    <label class="dataset-picker">
      <span>
        Dataset{" "}
        <Link href="/datasets" class="small">
          (the team's)
        </Link>
      </span>
      <span class="picker-row">
        <select
          value={dataset}
          data-testid="field-data.name"
          disabled={datasets === null}
          onChange={(e) => setDataset((e.target as HTMLSelectElement).value)}
        >
          <option value="">(none: {own} under data)</option>
          {!known && <option value={dataset}>{dataset}</option>}
          {(datasets ?? []).map((d) => (
            <option key={d.name} value={d.name}>
              {d.name}
            </option>
          ))}
        </select>
        {chosen && dataset !== DEFAULT_DATASET && (
          <span class="muted small" data-testid="dataset-choice-facts">
            {datasetFacts(chosen)}
            {chosen.prepare_status === "prepared" ? " · packed" : ""}
          </span>
        )}
      </span>
      {dataset && dataset === impliedDataset && dataset !== "" && (
        <span class="muted small">the preset's data already</span>
      )}
      {replaced.length > 0 && (
        <span class="warn small" data-testid="dataset-replaces">
          The dataset sets {replaced.join(" and ")} when the run is submitted: what is typed there under data is
          replaced (a typed mean or std is kept).
        </span>
      )}
      {datasetsError && <span class="muted small">The team's datasets could not be listed: {datasetsError}</span>}
      {metaError(DATA_NAME)}
    </label>
  );
}

export function RunMetaFields({ form }: { form: RunForm }) {
  const { kind, setKind, presets, preset, setPreset, project, setProject, tags, setTags, queue, setQueue } = form;
  const { notes, setNotes, errors } = form;
  const metaError = (k: string) =>
    errors[k] && (
      <div class="field-error" role="alert" data-testid={`field-error-${k}`}>
        {errors[k]}
      </div>
    );
  return (
    <div class="form-top card">
      <label>
        Kind
        <select
          value={kind}
          data-testid="field-kind"
          onChange={(e) => {
            setKind((e.target as HTMLSelectElement).value);
            setPreset("");
          }}
        >
          {RUN_KINDS.map((k) => (
            <option key={k} value={k}>
              {k}
            </option>
          ))}
        </select>
        {metaError("kind")}
      </label>
      {kind === "pretrain" && (
        <label>
          Preset
          <select
            value={preset}
            data-testid="field-preset"
            onChange={(e) => setPreset((e.target as HTMLSelectElement).value)}
            disabled={!presets}
          >
            <option value="">(none: the schema's defaults)</option>
            {(presets ?? []).map((p) => (
              <option key={p.name} value={p.name}>
                {p.name}
              </option>
            ))}
          </select>
          {metaError("preset")}
        </label>
      )}
      {form.evaluation && <SourcePicker form={form} metaError={metaError} />}
      <DatasetPicker form={form} metaError={metaError} />
      {form.evaluation && form.sourceRun ? (
        <label>
          Project <span class="muted small">(the pretraining run's)</span>
          <input value={form.sourceRuns?.find((r) => r.id === form.sourceRun)?.project ?? ""} disabled />
        </label>
      ) : (
        <label>
          Project
          <input
            value={project}
            data-testid="field-project"
            onInput={(e) => setProject((e.target as HTMLInputElement).value)}
          />
          {metaError("project")}
        </label>
      )}
      <label>
        Tags <span class="muted small">(comma-separated)</span>
        <input value={tags} data-testid="field-tags" onInput={(e) => setTags((e.target as HTMLInputElement).value)} />
        {metaError("tags")}
      </label>
      <label>
        Queue <span class="muted small">(default: the server's)</span>
        <input
          value={queue}
          data-testid="field-queue"
          placeholder="default"
          onInput={(e) => setQueue((e.target as HTMLInputElement).value)}
        />
        {metaError("queue")}
      </label>
      {kind === "pretrain" && (
        <>
          <label>
            GPUs per machine <span class="muted small">(one machine: the run's GPUs)</span>
            <input
              value={form.gpus}
              inputMode="numeric"
              data-testid="field-gpus_per_node"
              onInput={(e) => form.setGpus((e.target as HTMLInputElement).value)}
            />
            {metaError("resources.gpus_per_node")}
          </label>
          <label>
            Machines
            <input
              value={form.nodes}
              inputMode="numeric"
              data-testid="field-nodes"
              onInput={(e) => form.setNodes((e.target as HTMLInputElement).value)}
            />
            {metaError("resources.nodes")}
            {metaError("resources")}
          </label>
        </>
      )}
      <label class="wide">
        Notes
        <input
          value={notes}
          data-testid="field-notes"
          onInput={(e) => setNotes((e.target as HTMLInputElement).value)}
        />
      </label>
    </div>
  );
}
