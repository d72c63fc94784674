// Submit a run: a preset, then the form generated from the engine's JSON Schema; only changed fields are
// sent, as dotted overrides. "Clone and edit" (?clone=<run id>) starts from that run's spec.
import { useState } from "preact/hooks";
import { SchemaForm } from "../form/SchemaForm";
import { ErrorBox, Link, Loading } from "../ui/common";
import { FormTools } from "./newrun/FormTools";
import { RunMetaFields } from "./newrun/RunMetaFields";
import { useRunForm } from "./newrun/useRunForm";

export function NewRunPage({ query }: { query: URLSearchParams }) {
  const form = useRunForm(query);
  const { schema, clone, loadError, texts, errors, submitting, fields, base, overrides, onChange, submit } = form;
  const [filter, setFilter] = useState("");

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
        <RunMetaFields form={form} />
        {errors[""] && (
          <div class="state error" role="alert" data-testid="form-error">
            {errors[""]}
          </div>
        )}
        {!schema ? (
          <Loading what="form" />
        ) : (
          <>
            <FormTools filter={filter} setFilter={setFilter} overrides={overrides} />
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
