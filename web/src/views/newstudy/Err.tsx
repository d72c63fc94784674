// The error beside a study field, keyed like studyErrors() ("axes.0.values.1", "preset", ...).
export function Err({ k, errors }: { k: string; errors: Record<string, string> }) {
  return errors[k] ? (
    <div class="field-error" role="alert" data-testid={`study-error-${k}`}>
      {errors[k]}
    </div>
  ) : null;
}
