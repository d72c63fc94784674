// The run's own fields above the generated form: kind, preset, project, tags, queue, notes.
import { RUN_KINDS } from "../../api/types";
import type { RunForm } from "./useRunForm";

export function RunMetaFields({ form }: { form: RunForm }) {
  const { kind, setKind, presets, preset, setPreset, project, setProject, tags, setTags, queue, setQueue } = form;
  const { notes, setNotes, errors } = form;
  const metaError = (k: string) =>
    errors[k] && (
      <div class="field-error" role="alert" data-testid={`field-error-${k}`}>
        {errors[k]}
      </div>
    );
  return (
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
        <input value={tags} data-testid="field-tags" onInput={(e) => setTags((e.target as HTMLInputElement).value)} />
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
  );
}
