// "Base config and evaluations": name, base preset, evaluations, project, tags, queue, overrides, notes.
import type { EvalKind } from "../../api/types";
import { Err } from "./Err";
import type { StudyFormState } from "./useStudyForm";

const EVALS: { kind: EvalKind; label: string }[] = [
  { kind: "knn", label: "kNN" },
  { kind: "linear", label: "Linear probe" },
  { kind: "finetune", label: "Fine-tune" },
];

export function StudyBaseFields({ s }: { s: StudyFormState }) {
  const { form, set, errors, presets, queues } = s;
  const overrideErrors = Object.entries(errors).filter(([k]) => k === "overrides" || k.startsWith("overrides."));
  return (
    <>
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
    </>
  );
}
