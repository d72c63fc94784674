// Submit a run: a preset, then the form generated from the engine's JSON Schema; only changed fields are
// sent, as dotted overrides. "Clone and edit" (?clone=<run id>) starts from that run's spec.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError } from "../api/client";
import { RUN_KINDS, type PresetPublic, type RunDetail } from "../api/types";
import { SchemaForm } from "../form/SchemaForm";
import { errorsByField, fieldsOf, overridesOf, toText, valuesOf, type FieldDef, type Schema } from "../form/schema";
import { navigate } from "../router";
import { ErrorBox, Link, Loading } from "../ui/common";

const META = ["kind", "preset", "project", "tags", "queue", "notes"];

export function NewRunPage({ query }: { query: URLSearchParams }) {
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
  const [submitting, setSubmitting] = useState(false);
  const [filter, setFilter] = useState("");

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
        setNotes(r.notes ? `Clone of ${r.id}. ${r.notes}` : `Clone of ${r.id}.`);
      })
      .catch(setLoadError);
  }, [cloneId]);

  useEffect(() => {
    setSchema(null);
    api.schema(kind).then(setSchema).catch(setLoadError);
  }, [kind]);

  const fields: FieldDef[] = useMemo(() => (schema ? fieldsOf(schema) : []), [schema]);
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

  const { overrides, errors: localErrors } = useMemo(() => overridesOf(fields, base, texts), [fields, base, texts]);

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
    if (Object.keys(localErrors).length) {
      setErrors(localErrors);
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
    if (queue.trim()) body.queue = queue.trim();
    try {
      const run = await api.submit(body);
      navigate(`/runs/${encodeURIComponent(run.id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.validation.length) {
        setErrors(errorsByField(err.validation, [...fields.map((f) => f.path), ...META]));
        focusFirstError();
      } else {
        setErrors({ "": err instanceof Error ? err.message : String(err) });
      }
      setSubmitting(false);
    }
  };

  if (loadError)
    return (
      <main class="page">
        <ErrorBox error={loadError} />
      </main>
    );
  const shown = filter.trim()
    ? fields.filter(
        (f) =>
          f.path.toLowerCase().includes(filter.trim().toLowerCase()) ||
          f.description.toLowerCase().includes(filter.trim().toLowerCase()),
      )
    : fields;
  const nOverrides = Object.keys(overrides).length;
  const metaError = (k: string) =>
    errors[k] && (
      <div class="field-error" role="alert" data-testid={`field-error-${k}`}>
        {errors[k]}
      </div>
    );

  return (
    <main class="page new-run">
      <div class="page-head">
        <h1>
          {clone ? (
            <>
              Clone of <Link href={`/runs/${encodeURIComponent(clone.id)}`}>{clone.name || clone.id}</Link>
            </>
          ) : (
            "New run"
          )}
        </h1>
      </div>
      <form onSubmit={submit} noValidate data-testid="new-run-form">
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
          <label>
            Project
            <input
              value={project}
              data-testid="field-project"
              onInput={(e) => setProject((e.target as HTMLInputElement).value)}
            />
            {metaError("project")}
          </label>
          <label>
            Tags <span class="muted small">(comma-separated)</span>
            <input
              value={tags}
              data-testid="field-tags"
              onInput={(e) => setTags((e.target as HTMLInputElement).value)}
            />
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
          <label class="wide">
            Notes
            <input
              value={notes}
              data-testid="field-notes"
              onInput={(e) => setNotes((e.target as HTMLInputElement).value)}
            />
          </label>
        </div>
        {errors[""] && (
          <div class="state error" role="alert" data-testid="form-error">
            {errors[""]}
          </div>
        )}
        {!schema ? (
          <Loading what="form" />
        ) : (
          <>
            <div class="form-tools">
              <label>
                Find a field{" "}
                <input
                  type="search"
                  value={filter}
                  placeholder="e.g. base_lr"
                  data-testid="field-filter"
                  onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
                />
              </label>
              <span class="muted small" data-testid="overrides-count">
                {nOverrides} override{nOverrides === 1 ? "" : "s"}
                {nOverrides > 0 && (
                  <>
                    :{" "}
                    <code>
                      {Object.entries(overrides)
                        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
                        .join(" ")}
                    </code>
                  </>
                )}
              </span>
            </div>
            <SchemaForm
              fields={shown}
              texts={texts}
              base={base}
              errors={errors}
              onChange={onChange}
              open={filter ? shown.map((f) => f.section) : ["general", "optim"]}
            />
          </>
        )}
        <div class="form-actions">
          <button type="submit" class="btn primary" disabled={submitting || !schema} data-testid="submit-run">
            {submitting ? "Submitting…" : "Submit run"}
          </button>
          <Link href="/" class="btn ghost">
            Cancel
          </Link>
        </div>
      </form>
    </main>
  );
}
