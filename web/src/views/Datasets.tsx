// The team's datasets: what each holds (images, classes, mean/std), whether it is scanned and packed, live while
// a scan or prepare runs; "Add dataset" (?add=1) registers a folder, which a worker then scans.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api/client";
import { DATASET_KINDS, type DatasetPublic } from "../api/types";
import { navigate, useRoute } from "../router";
import { Empty, ErrorBox, Link, LiveIndicator, Loading, timeAgo } from "../ui/common";
import { ADD_FIELDS, addErrors, addRequest, AUTO_KIND } from "./datasets/add";
import { activeRunId, fmtCount, fmtMeanStd, fmtSplits, type RunProgress } from "./datasets/format";
import { DatasetStatusChip, PreparedChip, RunProgressBar } from "./datasets/parts";
import { useDatasets } from "./datasets/useDatasets";

export const datasetHref = (name: string) => `/datasets/${encodeURIComponent(name)}`;

function FieldError({ errors, k }: { errors: Record<string, string>; k: string }) {
  return errors[k] ? (
    <div class="field-error" role="alert" id={`add-${k}-err`} data-testid={`field-error-${k}`}>
      {errors[k]}
    </div>
  ) : null;
}

/** Register a folder under the allowed dataset roots; on success, its page (scanning, with progress). */
function AddDataset({ onClose }: { onClose: () => void }) {
  const [name, setName] = useState("");
  const [path, setPath] = useState("");
  const [kind, setKind] = useState(AUTO_KIND);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [submitting, setSubmitting] = useState(false);
  const formRef = useRef<HTMLFormElement>(null);
  useEffect(() => formRef.current?.querySelector<HTMLInputElement>("input")?.focus(), []);

  const focusFirstError = () =>
    requestAnimationFrame(() => {
      const k = ADD_FIELDS.find((f) => formRef.current?.querySelector(`#add-${f}-err`));
      if (k) formRef.current?.querySelector<HTMLElement>(`[name="${k}"]`)?.focus();
    });

  const submit = async (e: Event) => {
    e.preventDefault();
    const req = addRequest(name, path, kind);
    if (!req.body) {
      setErrors(req.errors);
      focusFirstError();
      return;
    }
    setSubmitting(true);
    setErrors({});
    try {
      const d = await api.addDataset(req.body);
      navigate(datasetHref(d.name));
    } catch (err) {
      if (err instanceof ApiError && err.validation.length) setErrors(addErrors(err.validation));
      else setErrors({ "": err instanceof Error ? err.message : String(err) });
      setSubmitting(false);
      focusFirstError();
    }
  };
  const input = (k: string, value: string, set: (v: string) => void, extra: Record<string, unknown> = {}) => ({
    name: k,
    value,
    "data-testid": `dataset-field-${k}`,
    "aria-invalid": errors[k] ? true : undefined,
    "aria-describedby": errors[k] ? `add-${k}-err` : undefined,
    spellcheck: false,
    onInput: (e: Event) => {
      set((e.target as HTMLInputElement).value);
      if (errors[k]) setErrors(({ [k]: _, ...rest }) => rest);
    },
    ...extra,
  });

  return (
    <form ref={formRef} class="card add-dataset" onSubmit={submit} noValidate data-testid="add-dataset-form">
      <h2>Add a dataset</h2>
      <p class="muted small">
        A folder the workers can read, under the server's allowed dataset roots (<code>MOCOLAB_DATASET_ROOTS</code>). A
        worker scans it: counts, classes, mean/std and a grid of samples. Nothing in it is changed or copied until you
        prepare a packed copy.
      </p>
      <div class="form-top">
        <label>
          Name <span class="muted small">(runs name it as data.name)</span>
          <input {...input("name", name, setName, { placeholder: "e.g. imagenet" })} />
          <FieldError errors={errors} k="name" />
        </label>
        <label class="wide">
          Path
          <input {...input("path", path, setPath, { placeholder: "/data/imagenet" })} />
          <FieldError errors={errors} k="path" />
        </label>
        <label>
          Kind
          <select
            name="kind"
            value={kind}
            data-testid="dataset-field-kind"
            aria-invalid={errors.kind ? true : undefined}
            onChange={(e) => setKind((e.target as HTMLSelectElement).value)}
          >
            <option value={AUTO_KIND}>auto-detect</option>
            {DATASET_KINDS.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
          <FieldError errors={errors} k="kind" />
        </label>
      </div>
      {errors[""] && (
        <div class="state error" role="alert" data-testid="form-error">
          {errors[""]}
        </div>
      )}
      <div class="form-actions static">
        <button type="submit" class="btn primary" disabled={submitting} data-testid="add-dataset-submit">
          {submitting ? "Adding…" : "Add and scan"}
        </button>
        <button type="button" class="btn ghost" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function DatasetsTable({ rows, runs }: { rows: DatasetPublic[]; runs: Record<string, RunProgress> }) {
  return (
    <div class="table-wrap">
      <table class="runs datasets" data-testid="datasets-table">
        <thead>
          <tr>
            <th scope="col">Dataset</th>
            <th scope="col">Kind</th>
            <th scope="col" class="num" title="Images in the train / val splits">
              Images (train / val)
            </th>
            <th scope="col" class="num">
              Classes
            </th>
            <th scope="col" title="Per-channel mean ± std of [0, 1] pixels, measured on the train split">
              Mean ± std
            </th>
            <th scope="col">Status</th>
            <th scope="col">Packed copy</th>
            <th scope="col">Updated</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((d) => {
            const runId = activeRunId(d);
            return (
              <tr
                key={d.name}
                class="clickable"
                data-testid="dataset-row"
                data-name={d.name}
                onClick={(e) => {
                  if (!(e.target as HTMLElement).closest("a, button")) navigate(datasetHref(d.name));
                }}
              >
                <td class="run-name">
                  <Link href={datasetHref(d.name)}>{d.name}</Link>
                  {d.builtin && <span class="badge quiet">built-in</span>}
                  {d.root && (
                    <div class="muted small mono root" title={d.root}>
                      {d.root}
                    </div>
                  )}
                </td>
                <td class="mono small">{d.kind}</td>
                <td
                  class="num"
                  data-testid="dataset-images"
                  data-train={d.splits?.train?.images ?? ""}
                  data-val={d.splits?.val?.images ?? ""}
                >
                  {fmtSplits(d.splits)}
                </td>
                <td class="num" data-testid="dataset-classes">
                  {fmtCount(d.num_classes ?? d.classes?.length ?? null)}
                </td>
                <td class="mono small">{fmtMeanStd(d.mean, d.std)}</td>
                <td>
                  <DatasetStatusChip d={d} />
                  {d.status === "failed" && d.error && (
                    <div class="bad small clip" title={d.error}>
                      {d.error}
                    </div>
                  )}
                </td>
                <td>
                  <PreparedChip d={d} />
                  {d.prepare_status === "failed" && d.error && (
                    <div class="bad small clip" title={d.error}>
                      {d.error}
                    </div>
                  )}
                  {runId && (
                    <div>
                      <RunProgressBar progress={runs[runId] ?? null} />
                    </div>
                  )}
                </td>
                <td class="small" title={d.updated_at}>
                  {timeAgo(d.updated_at)}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

export function DatasetsPage() {
  const route = useRoute();
  const adding = route.query.get("add") === "1";
  const { datasets, error, runs, live, retry } = useDatasets();
  const setAdding = (on: boolean) => navigate(on ? "/datasets?add=1" : "/datasets", true);

  return (
    <main class="page">
      <div class="page-head">
        <h1>Datasets</h1>
        <LiveIndicator state={live} />
        <span class="spacer" />
        {!adding && (
          <button type="button" class="btn primary" data-testid="add-dataset-button" onClick={() => setAdding(true)}>
            Add dataset
          </button>
        )}
      </div>
      <p class="muted small">
        The team's datasets: a run names one as <code>data.name</code> (the New run form's Dataset). Preparing one
        writes a packed copy (JPEG shards at a fixed short side) that trains without a decoding bottleneck.
      </p>
      {adding && <AddDataset onClose={() => setAdding(false)} />}
      {error ? <ErrorBox error={error} retry={retry} /> : null}
      {datasets === null && !error ? (
        <Loading what="datasets" />
      ) : datasets && datasets.length === 0 ? (
        <Empty>
          No datasets yet.{" "}
          <button type="button" class="linklike" onClick={() => setAdding(true)}>
            Add one
          </button>
          .
        </Empty>
      ) : datasets ? (
        <DatasetsTable rows={datasets} runs={runs} />
      ) : null}
    </main>
  );
}
