// The fields of a config schema, grouped by section; each input shows its default, marks a change, and
// shows the API's error for its path beside it.
import type { FieldDef } from "./schema";
import { sections, toText } from "./schema";

export interface SchemaFormProps {
  fields: FieldDef[];
  texts: Record<string, string>;
  base: Record<string, unknown>;
  errors: Record<string, string>;
  onChange: (path: string, text: string) => void;
  /** Sections open at first (others are collapsed). */
  open?: string[];
}

const inputId = (path: string) => `f-${path.replace(/[^A-Za-z0-9_-]/g, "_")}`;

export function FieldInput({
  f,
  text,
  baseText,
  error,
  onChange,
}: {
  f: FieldDef;
  text: string;
  baseText: string;
  error?: string;
  onChange: (path: string, text: string) => void;
}) {
  const id = inputId(f.path);
  const changed = text !== baseText;
  const describedBy = [`${id}-help`, error ? `${id}-err` : ""].filter(Boolean).join(" ");
  const common = {
    id,
    name: f.path,
    "data-testid": `field-${f.path}`,
    "aria-invalid": error ? true : undefined,
    "aria-describedby": describedBy,
  };
  let input;
  if (f.type === "boolean") {
    input = (
      <input
        type="checkbox"
        {...common}
        checked={text === "true"}
        onChange={(e) => onChange(f.path, String((e.target as HTMLInputElement).checked))}
      />
    );
  } else if (f.type === "enum") {
    input = (
      <select {...common} value={text} onChange={(e) => onChange(f.path, (e.target as HTMLSelectElement).value)}>
        {f.nullable && <option value="">(none)</option>}
        {f.options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </select>
    );
  } else {
    const numeric = f.type === "number" || f.type === "integer";
    input = (
      <input
        type="text"
        inputMode={numeric ? "decimal" : undefined}
        {...common}
        value={text}
        placeholder={f.nullable ? "none" : ""}
        spellcheck={false}
        onInput={(e) => onChange(f.path, (e.target as HTMLInputElement).value)}
      />
    );
  }
  const dflt = toText(f, f.default);
  return (
    <div class={`field${changed ? " changed" : ""}${error ? " invalid" : ""}`} data-path={f.path}>
      <label for={id}>
        <span class="field-name">{f.path.split(".").pop()}</span>
        {changed && (
          <span class="changed-dot" title="Changed from the default/preset">
            ●
          </span>
        )}
      </label>
      <div class="field-input">
        {input}
        {changed && (
          <button
            type="button"
            class="btn tiny ghost"
            onClick={() => onChange(f.path, baseText)}
            title={`Back to ${baseText || "none"}`}
            aria-label={`Reset ${f.path}`}
          >
            ↺
          </button>
        )}
      </div>
      <div class="field-help" id={`${id}-help`}>
        <span class="muted">
          default {dflt === "" ? "none" : <code>{dflt}</code>}
          {baseText !== dflt ? (
            <>
              {" "}
              · preset <code>{baseText || "none"}</code>
            </>
          ) : null}
        </span>
        {f.description && <span class="muted"> — {f.description}</span>}
      </div>
      {error && (
        <div class="field-error" id={`${id}-err`} role="alert" data-testid={`field-error-${f.path}`}>
          {error}
        </div>
      )}
    </div>
  );
}

export function SchemaForm(p: SchemaFormProps) {
  return (
    <div class="schema-form">
      {sections(p.fields).map(([name, fs]) => {
        const hasError = fs.some((f) => p.errors[f.path]);
        const nChanged = fs.filter((f) => p.texts[f.path] !== toText(f, p.base[f.path])).length;
        return (
          <details
            key={name}
            class="section"
            open={hasError || nChanged > 0 || (p.open ?? []).includes(name)}
            data-testid={`section-${name}`}
          >
            <summary>
              <span class="section-name">{name}</span>
              <span class="muted small">
                {fs.length} field{fs.length > 1 ? "s" : ""}
                {nChanged ? ` · ${nChanged} changed` : ""}
              </span>
              {hasError && <span class="bad small"> · error</span>}
            </summary>
            <div class="fields">
              {fs.map((f) => (
                <FieldInput
                  key={f.path}
                  f={f}
                  text={p.texts[f.path] ?? ""}
                  baseText={toText(f, p.base[f.path])}
                  error={p.errors[f.path]}
                  onChange={p.onChange}
                />
              ))}
            </div>
          </details>
        );
      })}
    </div>
  );
}
