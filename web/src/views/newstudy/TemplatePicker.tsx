// "What to vary": the paper's comparisons (with their numbers and values) or your own axes.
import { Loading } from "../../ui/common";
import { Err } from "./Err";
import { PaperNumbers } from "./PaperNumbers";
import type { StudyFormState } from "./useStudyForm";

export function TemplatePicker({ s }: { s: StudyFormState }) {
  const { templates, form, set, errors, setErrors, template, editable, pickTemplate } = s;
  return (
    <>
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
                <span class="muted small">(the values of this template set several keys and are used as they are)</span>
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
    </>
  );
}
