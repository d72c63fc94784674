// Fork: a new run from one of this run's checkpoints with changed settings; on success the browser goes to it.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../../api/client";
import type { CheckpointPublic, RunDetail } from "../../api/types";
import { FieldInput } from "../../form/SchemaForm";
import { fieldsOf, toText, valuesOf, type FieldDef } from "../../form/schema";
import { navigate } from "../../router";
import { Loading } from "../../ui/common";
import { buildForkRequest, FORK_FIELDS, forkCheckpoints, forkErrors } from "./fork";

export function ForkDialog({
  run,
  checkpoints,
  onClose,
}: {
  run: RunDetail;
  checkpoints: CheckpointPublic[];
  onClose: () => void;
}) {
  const kept = useMemo(() => forkCheckpoints(checkpoints), [checkpoints]);
  const [fields, setFields] = useState<FieldDef[] | null>(null);
  const [schemaError, setSchemaError] = useState<string | null>(null);
  const [step, setStep] = useState<number | null>(kept[0]?.step ?? null);
  const [name, setName] = useState(`${run.name || run.id} (fork)`);
  const [texts, setTexts] = useState<Record<string, string>>({});
  const [rows, setRows] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const box = useRef<HTMLDivElement>(null);

  const base = useMemo(() => (fields ? valuesOf(fields, run.spec ?? {}) : {}), [fields, run.spec]);
  const common = useMemo(() => (fields ?? []).filter((f) => FORK_FIELDS.includes(f.path)), [fields]);

  useEffect(() => {
    api
      .schema("pretrain")
      .then((s) => {
        const fs = fieldsOf(s);
        const b = valuesOf(fs, run.spec ?? {});
        setFields(fs);
        setTexts(
          Object.fromEntries(fs.filter((f) => FORK_FIELDS.includes(f.path)).map((f) => [f.path, toText(f, b[f.path])])),
        );
      })
      .catch((e) => setSchemaError((e as Error).message));
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    box.current?.querySelector<HTMLElement>("select, input")?.focus();
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!fields) return;
    const req = buildForkRequest({ step, name, texts, rows }, fields, base);
    if (!req.body) {
      setErrors(req.errors);
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      const child = await api.fork(run.id, req.body);
      navigate(`/runs/${encodeURIComponent(child.id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.validation.length)
        setErrors(forkErrors(err.validation, Object.keys(req.body.overrides ?? {})));
      else setErrors({ "": err instanceof Error ? err.message : String(err) });
      setBusy(false);
    }
  };

  const err = (k: string) =>
    errors[k] ? (
      <div class="field-error" role="alert" data-testid={`field-error-${k}`}>
        {errors[k]}
      </div>
    ) : null;

  return (
    <div class="modal-backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div
        class="modal card"
        role="dialog"
        aria-modal="true"
        aria-labelledby="fork-title"
        data-testid="fork-dialog"
        ref={box}
      >
        <form onSubmit={submit} noValidate>
          <h2 id="fork-title">Fork {run.name || run.id}</h2>
          <p class="muted small">
            A new run starts from the chosen checkpoint (weights, optimizer, data position and monitor state) and
            continues the step numbering with its own settings: schedules follow the new config. This run is left as it
            is.
          </p>
          {kept.length === 0 ? (
            <div class="state empty" data-testid="fork-no-checkpoint">
              This run has kept no checkpoint yet: there is nothing to fork from.
            </div>
          ) : (
            <div class="form-top">
              <label>
                Checkpoint
                <select
                  data-testid="fork-checkpoint"
                  value={step === null ? "" : String(step)}
                  onChange={(e) => {
                    const v = (e.target as HTMLSelectElement).value;
                    setStep(v === "" ? null : Number(v));
                  }}
                >
                  {kept.map((c, i) => (
                    <option key={c.step} value={String(c.step)}>
                      step {c.step}
                      {i === 0 ? " (latest)" : ""}
                      {c.healthy ? "" : " — not healthy"}
                    </option>
                  ))}
                </select>
                {err("checkpoint_step")}
              </label>
              <label class="wide">
                Name
                <input
                  value={name}
                  data-testid="fork-name"
                  onInput={(e) => setName((e.target as HTMLInputElement).value)}
                />
                {err("name")}
              </label>
            </div>
          )}
          {schemaError ? (
            <div class="state error">The settings' schema could not be loaded: {schemaError}</div>
          ) : !fields ? (
            <Loading what="settings" />
          ) : (
            <div class="fields fork-fields">
              {common.map((f) => (
                <FieldInput
                  key={f.path}
                  f={f}
                  text={texts[f.path] ?? ""}
                  baseText={toText(f, base[f.path])}
                  error={errors[f.path]}
                  onChange={(path, text) => setTexts((cur) => ({ ...cur, [path]: text }))}
                />
              ))}
            </div>
          )}
          <label class="wide block">
            Other settings <span class="muted small">(dotted key=value, one a line, e.g. augment.min_scale=0.2)</span>
            <textarea
              rows={3}
              spellcheck={false}
              data-testid="fork-overrides"
              value={rows}
              onInput={(e) => setRows((e.target as HTMLTextAreaElement).value)}
            />
            {err("rows")}
          </label>
          {errors[""] && (
            <div class="state error" role="alert" data-testid="form-error">
              {errors[""]}
            </div>
          )}
          <div class="form-actions static">
            <button
              type="submit"
              class="btn primary"
              disabled={busy || !fields || kept.length === 0}
              data-testid="fork-submit"
            >
              {busy ? "Forking…" : "Fork"}
            </button>
            <button type="button" class="btn ghost" onClick={onClose} data-testid="fork-cancel">
              Cancel
            </button>
          </div>
        </form>
      </div>
    </div>
  );
}
