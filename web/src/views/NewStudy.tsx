// Start a study: one of the paper's comparisons (what it varies and the paper's numbers shown) or one or
// two axes of your own (a spec field from the JSON Schema and comma-separated values), on a base preset
// with overrides, followed by the chosen evaluations. The API's 422 errors are shown beside the axis value
// or field they name.
import { ErrorBox, Link } from "../ui/common";
import { StudyAxes } from "./newstudy/StudyAxes";
import { StudyBaseFields } from "./newstudy/StudyBaseFields";
import { TemplatePicker } from "./newstudy/TemplatePicker";
import { useStudyForm } from "./newstudy/useStudyForm";

export function NewStudyPage({ query }: { query: URLSearchParams }) {
  const s = useStudyForm(query);
  const { fields, loadError, form, errors, submitting, nRuns, submit } = s;

  if (loadError)
    return (
      <main class="page">
        <ErrorBox error={loadError} />
      </main>
    );
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
        <TemplatePicker s={s} />
        <StudyAxes s={s} />
        <StudyBaseFields s={s} />
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
