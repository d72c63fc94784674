// The axes of your own (one, or two for a grid), and the axis errors that name no value.
import { AxisEditor } from "./AxisEditor";
import { Err } from "./Err";
import type { StudyFormState } from "./useStudyForm";

export function StudyAxes({ s }: { s: StudyFormState }) {
  const { form, set, errors, fields, byPath, setAxis, removeAxis } = s;
  const otherAxisErrors = !form.axes.length ? Object.entries(errors).filter(([k]) => k.startsWith("axes")) : [];
  return (
    <>
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
    </>
  );
}
