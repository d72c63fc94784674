// Start a study: one of the paper's comparisons (what it varies and the paper's numbers shown) or one or
// two axes of your own (a spec field from the JSON Schema and comma-separated values), on a base preset
// with overrides, followed by the chosen evaluations. The API's 422 errors are shown beside the axis value
// or field they name.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError } from "../api/client";
import type { EvalKind, PresetPublic, TemplatePublic } from "../api/types";
import { fieldsOf, type FieldDef } from "../form/schema";
import { navigate } from "../router";
import {
  buildStudyRequest,
  emptyForm,
  parseValue,
  splitValues,
  studyErrors,
  templateAxes,
  type AxisForm,
  type StudyForm,
} from "../studies/logic";
import { ErrorBox, Link, Loading } from "../ui/common";

const EVALS: { kind: EvalKind; label: string }[] = [
  { kind: "knn", label: "kNN" },
  { kind: "linear", label: "Linear probe" },
  { kind: "finetune", label: "Fine-tune" },
];

function Err({ k, errors }: { k: string; errors: Record<string, string> }) {
  return errors[k] ? (
    <div class="field-error" role="alert" data-testid={`study-error-${k}`}>
      {errors[k]}
    </div>
  ) : null;
}

/** The paper's numbers of a template: one axis as a list, two as a grid. */
export function PaperNumbers({ t }: { t: TemplatePublic }) {
  if (!t.paper) return <p class="muted small">The paper printed no table for this comparison.</p>;
  const caption = (
    <div class="small muted paper-caption">
      Paper, {t.paper.source} ({t.paper.protocol} top-1 on ImageNet): {t.paper.setting}.
      {t.paper.notes ? ` ${t.paper.notes}` : ""}
    </div>
  );
  if (t.axes.length === 2) {
    return (
      <>
        {caption}
        <table class="simple paper-numbers">
          <thead>
            <tr>
              <th scope="col">
                {t.axes[0].name} \ {t.axes[1].name}
              </th>
              {t.axes[1].labels.map((l) => (
                <th scope="col" key={l}>
                  {l}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {t.axes[0].labels.map((a) => (
              <tr key={a}>
                <th scope="row">{a}</th>
                {t.axes[1].labels.map((b) => (
                  <td key={b} class="num">
                    {t.paper_numbers[`${a} | ${b}`]?.toFixed(1) ?? "—"}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </>
    );
  }
  return (
    <>
      {caption}
      <table class="simple paper-numbers">
        <thead>
          <tr>
            <th scope="col">{t.axes[0]?.name}</th>
            <th scope="col">paper top-1</th>
          </tr>
        </thead>
        <tbody>
          {(t.axes[0]?.labels ?? []).map((l) => (
            <tr key={l}>
              <td>{l}</td>
              <td class="num">{t.paper_numbers[l]?.toFixed(1) ?? "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function AxisEditor({
  i,
  axis,
  fields,
  byPath,
  errors,
  onChange,
  onRemove,
}: {
  i: number;
  axis: AxisForm;
  fields: FieldDef[];
  byPath: Map<string, FieldDef>;
  errors: Record<string, string>;
  onChange: (a: AxisForm) => void;
  onRemove: () => void;
}) {
  const field = byPath.get(axis.path.trim());
  const texts = splitValues(axis.text);
  return (
    <fieldset class="card axis" data-testid={`study-axis-${i}`}>
      <legend>
        Axis {i + 1}
        {axis.name ? `: ${axis.name}` : ""}
      </legend>
      <div class="axis-inputs">
        <label>
          Setting (spec field)
          <input
            list="study-fields"
            value={axis.path}
            size={30}
            spellcheck={false}
            placeholder="e.g. optim.base_lr"
            data-testid={`study-axis-path-${i}`}
            aria-invalid={errors[`axes.${i}.path`] ? true : undefined}
            onInput={(e) => onChange({ ...axis, path: (e.target as HTMLInputElement).value, labels: undefined })}
          />
          <Err k={`axes.${i}.path`} errors={errors} />
        </label>
        <label class="grow">
          Values{" "}
          <span class="muted small">
            (comma-separated
            {field?.type === "enum"
              ? `: ${field.options.join(", ")}`
              : field?.type === "boolean"
                ? ": true, false"
                : ""}
            )
          </span>
          <input
            value={axis.text}
            spellcheck={false}
            placeholder={field?.type === "enum" ? field.options.slice(0, 3).join(", ") : "e.g. 1e-4, 3e-4"}
            data-testid={`study-axis-values-${i}`}
            aria-invalid={errors[`axes.${i}`] ? true : undefined}
            onInput={(e) => onChange({ ...axis, text: (e.target as HTMLInputElement).value })}
          />
          <Err k={`axes.${i}`} errors={errors} />
        </label>
        <button type="button" class="btn small ghost" onClick={onRemove} aria-label={`Remove axis ${i + 1}`}>
          Remove
        </button>
      </div>
      {field && (
        <div class="muted small">
          {field.description || field.title}
          {field.default !== null ? ` Default: ${JSON.stringify(field.default)}.` : ""}
        </div>
      )}
      {texts.length > 0 && (
        <ol class="axis-values">
          {texts.map((t, j) => {
            const p = parseValue(field, t);
            const err = !p.ok ? p.error : errors[`axes.${i}.values.${j}`];
            const label = p.ok ? axis.labels?.[JSON.stringify(p.value)] : undefined;
            return (
              <li key={j} class={err ? "bad" : ""} data-testid={`study-axis-value-${i}-${j}`}>
                <span class="muted small">{j + 1}.</span> <code>{t}</code>
                {label && label !== t ? <span class="muted small"> ({label})</span> : null}
                {err && (
                  <span class="field-error" role="alert" data-testid={`study-error-axes.${i}.values.${j}`}>
                    {" "}
                    {err}
                  </span>
                )}
              </li>
            );
          })}
        </ol>
      )}
      {fields.length === 0 && <div class="muted small">Loading the fields…</div>}
    </fieldset>
  );
}

export function NewStudyPage({ query }: { query: URLSearchParams }) {
  const [templates, setTemplates] = useState<TemplatePublic[] | null>(null);
  const [presets, setPresets] = useState<PresetPublic[] | null>(null);
  const [fields, setFields] = useState<FieldDef[]>([]);
  const [queues, setQueues] = useState<string[]>([]);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [form, setForm] = useState<StudyForm>(() => ({ ...emptyForm(), template: query.get("template") ?? "" }));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [submitting, setSubmitting] = useState(false);
  const set = (patch: Partial<StudyForm>) => setForm((f) => ({ ...f, ...patch }));

  useEffect(() => {
    api
      .studyTemplates()
      .then((ts) => {
        setTemplates(ts);
        setForm((f) =>
          f.template && !f.name ? { ...f, name: ts.find((t) => t.name === f.template)?.title ?? "" } : f,
        );
      })
      .catch(setLoadError);
    api
      .presets()
      .then((ps) => {
        const pre = ps.filter((p) => p.kind === "pretrain");
        setPresets(pre);
        setForm((f) =>
          f.preset ? f : { ...f, preset: pre.find((p) => p.name === "fmnist_tiny")?.name ?? pre[0]?.name ?? "" },
        );
      })
      .catch(setLoadError);
    api
      .schema("pretrain")
      .then((s) => setFields(fieldsOf(s)))
      .catch(setLoadError);
    api
      .workers()
      .then((w) => {
        const qs = Array.from(new Set(w.data.filter((x) => x.online && x.queue).map((x) => x.queue as string)));
        setQueues(qs);
        setForm((f) => (f.queue || !qs.length ? f : { ...f, queue: qs[0] }));
      })
      .catch(() => {});
  }, []);

  const byPath = useMemo(() => new Map(fields.map((f) => [f.path, f])), [fields]);
  const template = templates?.find((t) => t.name === form.template) ?? null;
  const editable = template ? templateAxes(template) : null;

  const pickTemplate = (name: string) => {
    setErrors({});
    setForm((f) => ({
      ...f,
      template: name,
      axes: name ? [] : f.axes.length ? f.axes : [{ path: "", text: "" }],
      name:
        f.name && !templates?.some((t) => t.title === f.name)
          ? f.name
          : (templates?.find((t) => t.name === name)?.title ?? f.name),
    }));
  };
  const setAxis = (i: number, a: AxisForm) => setForm((f) => ({ ...f, axes: f.axes.map((x, j) => (j === i ? a : x)) }));
  const removeAxis = (i: number) => setForm((f) => ({ ...f, axes: f.axes.filter((_, j) => j !== i) }));

  const counts = form.axes.length
    ? form.axes.map((a) => splitValues(a.text).length)
    : template
      ? template.axes.map((a) => a.labels.length)
      : [];
  const nRuns = counts.length ? counts.reduce((a, b) => a * b, 1) : 0;

  const focusFirstError = () =>
    requestAnimationFrame(() => {
      const el = document.querySelector<HTMLElement>('[data-testid^="study-error-"]');
      el?.scrollIntoView({ block: "center" });
    });

  const submit = async (e: Event) => {
    e.preventDefault();
    const { body, errors: local } = buildStudyRequest(form, fields);
    if (!body) {
      setErrors(local);
      focusFirstError();
      return;
    }
    setSubmitting(true);
    setErrors({});
    try {
      const study = await api.createStudy(body);
      navigate(`/studies/${encodeURIComponent(study.id)}`);
    } catch (err) {
      setErrors(
        err instanceof ApiError && err.validation.length
          ? studyErrors(err.validation)
          : { "": err instanceof Error ? err.message : String(err) },
      );
      setSubmitting(false);
      focusFirstError();
    }
  };

  if (loadError)
    return (
      <main class="page">
        <ErrorBox error={loadError} />
      </main>
    );
  const overrideErrors = Object.entries(errors).filter(([k]) => k === "overrides" || k.startsWith("overrides."));
  const otherAxisErrors = !form.axes.length ? Object.entries(errors).filter(([k]) => k.startsWith("axes")) : [];

  return (
    <main class="page new-study">
      <div class="page-head">
        <h1>New study</h1>
        <span class="spacer" />
        <Link href="/studies">All studies</Link>
      </div>
      <form onSubmit={submit} noValidate data-testid="new-study-form">
        <datalist id="study-fields">
          {fields.map((f) => (
            <option key={f.path} value={f.path}>
              {f.title}
            </option>
          ))}
        </datalist>
        <h2>What to vary</h2>
        {!templates ? (
          <Loading what="templates" />
        ) : (
          <div class="template-grid" role="radiogroup" aria-label="Study template">
            {templates.map((t) => (
              <button
                type="button"
                key={t.name}
                role="radio"
                aria-checked={form.template === t.name}
                class={`template${form.template === t.name ? " chosen" : ""}`}
                data-testid={`study-template-${t.name}`}
                onClick={() => pickTemplate(t.name)}
              >
                <b>{t.title}</b>
                <span class="small muted">{t.axes.map((a) => `${a.name}: ${a.labels.join(", ")}`).join(" × ")}</span>
                {t.paper && <span class="small">Paper: {t.paper.source}</span>}
              </button>
            ))}
            <button
              type="button"
              role="radio"
              aria-checked={!form.template}
              class={`template${!form.template ? " chosen" : ""}`}
              data-testid="study-template-custom"
              onClick={() => pickTemplate("")}
            >
              <b>Your own</b>
              <span class="small muted">One or two settings of the spec, with your values.</span>
            </button>
          </div>
        )}
        <Err k="template" errors={errors} />
        {template && (
          <div class="card template-detail" data-testid="study-template-detail">
            <p>
              <b>{template.title}.</b> {template.description}
            </p>
            <PaperNumbers t={template} />
            {!form.axes.length ? (
              <div class="template-values">
                {template.axes.map((a, i) => (
                  <div key={a.name}>
                    <b>{a.name}</b>:{" "}
                    {a.labels.map((l, j) => (
                      <span key={l} class="tag static" title={JSON.stringify(template.values[i]?.[j] ?? {})}>
                        {l}
                        <Err k={`axes.${i}.values.${j}`} errors={errors} />
                      </span>
                    ))}
                  </div>
                ))}
                {editable ? (
                  <button
                    type="button"
                    class="btn small"
                    data-testid="study-edit-values"
                    onClick={() => set({ axes: editable })}
                  >
                    Change the values
                  </button>
                ) : (
                  <span class="muted small">
                    (the values of this template set several keys and are used as they are)
                  </span>
                )}
                <span class="muted small">
                  {" "}
                  The paper's values are ImageNet-sized; a CPU-sized study may want smaller ones.
                </span>
              </div>
            ) : (
              <button
                type="button"
                class="btn small ghost"
                onClick={() => {
                  set({ axes: [] });
                  setErrors({});
                }}
              >
                Use the template's values
              </button>
            )}
          </div>
        )}
        {otherAxisErrors
          .filter(([k]) => !/^axes\.\d+\.values\.\d+$/.test(k))
          .map(([k, v]) => (
            <div key={k} class="field-error" role="alert" data-testid={`study-error-${k}`}>
              {v}
            </div>
          ))}
        {(form.axes.length > 0 || !form.template) && (
          <div class="axes">
            {form.axes.map((a, i) => (
              <AxisEditor
                key={i}
                i={i}
                axis={a}
                fields={fields}
                byPath={byPath}
                errors={errors}
                onChange={(x) => setAxis(i, x)}
                onRemove={() => removeAxis(i)}
              />
            ))}
            {form.axes.length < 2 && (
              <button
                type="button"
                class="btn small"
                data-testid="study-add-axis"
                onClick={() => set({ axes: [...form.axes, { path: "", text: "" }] })}
              >
                {form.axes.length ? "Add a second axis (a grid)" : "Add an axis"}
              </button>
            )}
            {form.axes.length > 0 && <Err k="axes" errors={errors} />}
          </div>
        )}

        <h2>Base config and evaluations</h2>
        <div class="form-top card">
          <label>
            Name
            <input
              value={form.name}
              data-testid="study-name"
              aria-invalid={errors.name ? true : undefined}
              onInput={(e) => set({ name: (e.target as HTMLInputElement).value })}
            />
            <Err k="name" errors={errors} />
          </label>
          <label>
            Base preset
            <select
              value={form.preset}
              data-testid="study-preset"
              disabled={!presets}
              onChange={(e) => set({ preset: (e.target as HTMLSelectElement).value })}
            >
              <option value="">(none: the schema's defaults)</option>
              {(presets ?? []).map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name}
                </option>
              ))}
            </select>
            <Err k="preset" errors={errors} />
          </label>
          <fieldset class="evals">
            <legend>Evaluations after each run</legend>
            {EVALS.map((ev) => (
              <label key={ev.kind} class="check">
                <input
                  type="checkbox"
                  checked={form.evaluations.includes(ev.kind)}
                  data-testid={`study-eval-${ev.kind}`}
                  onChange={(e) =>
                    set({
                      evaluations: (e.target as HTMLInputElement).checked
                        ? EVALS.map((x) => x.kind).filter((k) => k === ev.kind || form.evaluations.includes(k))
                        : form.evaluations.filter((k) => k !== ev.kind),
                    })
                  }
                />
                {ev.label}
              </label>
            ))}
            <Err k="evaluations" errors={errors} />
          </fieldset>
          <label>
            Project
            <input
              value={form.project}
              data-testid="study-project"
              onInput={(e) => set({ project: (e.target as HTMLInputElement).value })}
            />
            <Err k="project" errors={errors} />
          </label>
          <label>
            Tags <span class="muted small">(comma-separated)</span>
            <input
              value={form.tags}
              data-testid="study-tags"
              onInput={(e) => set({ tags: (e.target as HTMLInputElement).value })}
            />
            <Err k="tags" errors={errors} />
          </label>
          <label>
            Queue
            <input
              value={form.queue}
              list="study-queues"
              data-testid="study-queue"
              placeholder="gpu"
              onInput={(e) => set({ queue: (e.target as HTMLInputElement).value })}
            />
            <datalist id="study-queues">
              {queues.map((q) => (
                <option key={q} value={q} />
              ))}
            </datalist>
            <Err k="queue" errors={errors} />
          </label>
          <label class="wide">
            Overrides on the base <span class="muted small">(key=value, one a line, e.g. train.steps=60)</span>
            <textarea
              rows={3}
              value={form.overrides}
              spellcheck={false}
              data-testid="study-overrides"
              aria-invalid={overrideErrors.length ? true : undefined}
              onInput={(e) => set({ overrides: (e.target as HTMLTextAreaElement).value })}
            />
            {overrideErrors.map(([k, v]) => (
              <div key={k} class="field-error" role="alert" data-testid={`study-error-${k}`}>
                {v}
              </div>
            ))}
          </label>
          <label class="wide">
            Notes
            <input
              value={form.notes}
              data-testid="study-notes"
              onInput={(e) => set({ notes: (e.target as HTMLInputElement).value })}
            />
          </label>
        </div>
        {errors[""] && (
          <div class="state error" role="alert" data-testid="form-error">
            {errors[""]}
          </div>
        )}
        <div class="form-actions">
          <button type="submit" class="btn primary" disabled={submitting} data-testid="study-submit">
            {submitting
              ? "Submitting…"
              : `Start the study${
                  nRuns
                    ? ` (${nRuns} run${nRuns === 1 ? "" : "s"}${
                        form.evaluations.length
                          ? ` + ${nRuns * form.evaluations.length} evaluation${nRuns * form.evaluations.length === 1 ? "" : "s"}`
                          : ""
                      })`
                    : ""
                }`}
          </button>
          <Link href="/studies" class="btn ghost">
            Cancel
          </Link>
        </div>
      </form>
    </main>
  );
}
