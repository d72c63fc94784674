// One axis of your own: the spec field it varies and its comma-separated values, each checked as typed.
import type { FieldDef } from "../../form/schema";
import { parseValue, splitValues, type AxisForm } from "../../studies/logic";
import { Err } from "./Err";

export function AxisEditor({
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
