// The new-run form's state: presets, the kind's JSON Schema and the cloned run loaded; the texts of the
// fields (reset when the schema, preset or clone changes), the overrides they make against the preset, the
// errors (the browser's own, then the API's 422 by field) and the submission. An evaluation names the
// checkpoint it reads by its pretraining run and step (source.ts), not by the spec's path field; the dataset is
// a select of the team's registered ones (dataset.ts), not the generated form's data.name field.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError } from "../../api/client";
import type { DatasetPublic } from "../../api/types";
import type { CheckpointPublic, PresetPublic, RunDetail, RunPublic } from "../../api/types";
import {
  errorsByField,
  fieldsOf,
  flatten,
  overridesOf,
  toText,
  valuesOf,
  type FieldDef,
  type Schema,
} from "../../form/schema";
import { navigate } from "../../router";
import {
  CHECKPOINT_FIELD,
  isEvaluation,
  moveCheckpointError,
  pretrainChoices,
  SOURCE_FIELDS,
  sourceFields,
} from "./source";
import { RESOURCE_FIELDS, resourcesOf } from "./resources";
import { clonedDataset, DATA_NAME, datasetChoices, datasetOverride, impliedDataset } from "./dataset";

const META = ["kind", "preset", "project", "tags", "queue", "notes", ...SOURCE_FIELDS, ...RESOURCE_FIELDS];

export type RunForm = ReturnType<typeof useRunForm>;

/** Set by the server on a fork (POST /runs/{id}/fork), refused in a submitted spec: never a field of the form. */
const FORK_FROM = "fork_from";

export function useRunForm(query: URLSearchParams) {
  const cloneId = query.get("clone");
  const [kind, setKind] = useState(query.get("kind") ?? "pretrain");
  const [presets, setPresets] = useState<PresetPublic[] | null>(null);
  const [preset, setPreset] = useState<string>(query.get("preset") ?? "");
  const [schema, setSchema] = useState<Schema | null>(null);
  const [clone, setClone] = useState<RunDetail | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [texts, setTexts] = useState<Record<string, string>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [project, setProject] = useState("default");
  const [tags, setTags] = useState("");
  const [queue, setQueue] = useState("");
  const [notes, setNotes] = useState("");
  const [gpus, setGpus] = useState("1"); // GPUs on each machine
  const [nodes, setNodes] = useState("1"); // machines
  const [submitting, setSubmitting] = useState(false);
  const [sourceRuns, setSourceRuns] = useState<RunPublic[] | null>(null);
  const [sourceRun, setSourceRun] = useState(query.get("run_id") ?? "");
  const [checkpoints, setCheckpoints] = useState<CheckpointPublic[] | null>(null);
  const [checkpointStep, setCheckpointStep] = useState(""); // "" = the latest
  // the team's ready datasets (null: loading; a server without them leaves the select to the preset's data)
  const [datasets, setDatasets] = useState<DatasetPublic[] | null>(null);
  const [datasetsError, setDatasetsError] = useState<string | null>(null);
  // the dataset picked (?dataset=, a clone's, or by hand); null = whatever the preset reads
  const [pickedDataset, setPickedDataset] = useState<string | null>(query.get("dataset"));

  useEffect(() => {
    api
      .datasets()
      .then((all) => setDatasets(datasetChoices(all)))
      .catch((e) => {
        setDatasets([]);
        setDatasetsError(e instanceof Error ? e.message : String(e));
      });
  }, []);

  useEffect(() => {
    api
      .presets()
      .then((ps) => {
        setPresets(ps);
        if (!cloneId && !query.get("preset") && ps.length) {
          setPreset(ps.find((p) => p.name === "fmnist_small")?.name ?? ps[0].name);
        }
      })
      .catch(setLoadError);
  }, []);

  useEffect(() => {
    if (!cloneId) return;
    api
      .run(cloneId)
      .then((r) => {
        setClone(r);
        setKind(r.kind);
        // Newer servers say what the run was submitted with: its preset and only its own overrides.
        setPreset(r.kind === "pretrain" && typeof r.preset === "string" ? r.preset : "");
        setProject(r.project);
        setTags(r.tags.join(", "));
        setQueue(r.queue);
        setGpus(String(r.gpus_per_node ?? 1));
        setNodes(String(r.nodes ?? 1));
        setNotes(r.notes ? `Clone of ${r.id}. ${r.notes}` : `Clone of ${r.id}.`);
        if (r.kind !== "pretrain" && r.parent_run_id) setSourceRun(r.parent_run_id);
        const named = clonedDataset(r);
        if (named) setPickedDataset(named);
      })
      .catch(setLoadError);
  }, [cloneId]);

  useEffect(() => {
    setSchema(null);
    api.schema(kind).then(setSchema).catch(setLoadError);
  }, [kind]);

  // The team's pretraining runs, once an evaluation is chosen; the first is picked unless one already is.
  const evaluation = isEvaluation(kind);
  useEffect(() => {
    if (!evaluation || sourceRuns) return;
    api
      .runs({ kind: "pretrain", limit: 200 })
      .then((page) => {
        const runs = pretrainChoices(page.data);
        setSourceRuns(runs);
        setSourceRun((cur) => cur || (cloneId ? "" : (runs[0]?.id ?? "")));
      })
      .catch(setLoadError);
  }, [evaluation]);

  // The chosen run's checkpoints (for the step picker); the step goes back to "latest" on each new run.
  useEffect(() => {
    setCheckpoints(null);
    setCheckpointStep("");
    if (!evaluation || !sourceRun) return;
    const ctl = new AbortController();
    api
      .checkpoints(sourceRun, ctl.signal)
      .then(setCheckpoints)
      .catch((err) => {
        if ((err as Error).name !== "AbortError") setCheckpoints([]);
      });
    return () => ctl.abort();
  }, [evaluation, sourceRun]);

  const fields: FieldDef[] = useMemo(
    () =>
      schema
        ? fieldsOf(schema).filter(
            // fork_from is the server's (a fork's checkpoint): a clone of a fork starts afresh
            (f) => !(isEvaluation(kind) && f.path === CHECKPOINT_FIELD) && f.path !== DATA_NAME && f.path !== FORK_FROM,
          )
        : [],
    [schema],
  );
  const presetTree = (kind === "pretrain" && presets?.find((p) => p.name === preset)?.overrides) || {};
  // The baseline that overrides are measured against: schema defaults with the preset on top.
  const base = useMemo(() => valuesOf(fields, presetTree), [fields, preset, presets]);

  // Reset the texts when the schema, the preset or the cloned run changes.
  useEffect(() => {
    if (!fields.length) return;
    const submitted = clone?.overrides && typeof clone.overrides === "object" ? clone.overrides : null;
    const start =
      clone && clone.kind === kind
        ? submitted
          ? valuesOf(fields, presetTree, submitted)
          : valuesOf(fields, clone.spec)
        : base;
    const t: Record<string, string> = {};
    for (const f of fields) t[f.path] = toText(f, start[f.path]);
    setTexts(t);
    setErrors({});
  }, [fields, base, clone]);

  const { overrides: fieldOverrides, errors: localErrors } = useMemo(
    () => overridesOf(fields, base, texts),
    [fields, base, texts],
  );
  // The dataset the baseline reads already (sends nothing), and the one the select shows.
  const impliedName = schema ? impliedDataset({ ...base, [DATA_NAME]: flatten(presetTree)[DATA_NAME] }) : "";
  const dataset = pickedDataset ?? impliedName;
  const overrides = useMemo(
    () => ({ ...fieldOverrides, ...datasetOverride(dataset, impliedName) }),
    [fieldOverrides, dataset, impliedName],
  );
  const setDataset = (name: string) => {
    setPickedDataset(name);
    setErrors((e) => {
      if (!e[DATA_NAME]) return e;
      const n = { ...e };
      delete n[DATA_NAME];
      return n;
    });
  };

  const onChange = (path: string, text: string) => {
    setTexts((t) => ({ ...t, [path]: text }));
    setErrors((e) => {
      if (!e[path]) return e;
      const n = { ...e };
      delete n[path];
      return n;
    });
  };

  /** After the errors render: bring the first one into view and focus its input. */
  const focusFirstError = () =>
    requestAnimationFrame(() => {
      const err = document.querySelector<HTMLElement>('[data-testid^="field-error-"], [data-testid="form-error"]');
      if (!err) return;
      err.scrollIntoView({ block: "center" });
      const input = err.closest(".field, label")?.querySelector<HTMLElement>("input, select");
      input?.focus({ preventScroll: true });
    });

  const submit = async (e: Event) => {
    e.preventDefault();
    const asked = resourcesOf(kind, gpus, nodes);
    if (Object.keys(localErrors).length || Object.keys(asked.errors).length) {
      setErrors({ ...localErrors, ...asked.errors });
      focusFirstError();
      return;
    }
    setSubmitting(true);
    setErrors({});
    const body: Record<string, unknown> = {
      kind,
      overrides,
      project: project.trim() || "default",
      tags: tags
        .split(",")
        .map((t) => t.trim())
        .filter(Boolean),
      notes,
    };
    if (kind === "pretrain" && preset) body.preset = preset;
    Object.assign(body, sourceFields(kind, sourceRun, checkpointStep));
    if (queue.trim()) body.queue = queue.trim();
    if (asked.resources) body.resources = asked.resources;
    try {
      const run = await api.submit(body);
      navigate(`/runs/${encodeURIComponent(run.id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.validation.length) {
        const paths = [...fields.map((f) => f.path), ...META, CHECKPOINT_FIELD, DATA_NAME];
        setErrors(moveCheckpointError(errorsByField(err.validation, paths)));
        focusFirstError();
      } else {
        setErrors({ "": err instanceof Error ? err.message : String(err) });
      }
      setSubmitting(false);
    }
  };

  return {
    kind,
    setKind,
    presets,
    preset,
    setPreset,
    schema,
    clone,
    loadError,
    texts,
    errors,
    project,
    setProject,
    tags,
    setTags,
    queue,
    setQueue,
    notes,
    setNotes,
    gpus,
    setGpus,
    nodes,
    setNodes,
    submitting,
    evaluation,
    sourceRuns,
    sourceRun,
    setSourceRun,
    checkpoints,
    checkpointStep,
    setCheckpointStep,
    datasets,
    datasetsError,
    dataset,
    impliedDataset: impliedName,
    setDataset,
    fields,
    base,
    overrides,
    onChange,
    submit,
  };
}
