// The new-study form's state: templates, presets, the pretraining schema's fields and the online workers'
// queues loaded; the form (prefilled from ?template=), its errors (the browser's own, then the API's 422)
// and the submission.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError } from "../../api/client";
import type { PresetPublic, TemplatePublic } from "../../api/types";
import { fieldsOf, type FieldDef } from "../../form/schema";
import { navigate } from "../../router";
import {
  buildStudyRequest,
  emptyForm,
  splitValues,
  studyErrors,
  templateAxes,
  type AxisForm,
  type StudyForm,
} from "../../studies/logic";

export type StudyFormState = ReturnType<typeof useStudyForm>;

export function useStudyForm(query: URLSearchParams) {
  const [templates, setTemplates] = useState<TemplatePublic[] | null>(null);
  const [presets, setPresets] = useState<PresetPublic[] | null>(null);
  const [fields, setFields] = useState<FieldDef[]>([]);
  const [queues, setQueues] = useState<string[]>([]);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [form, setForm] = useState<StudyForm>(() => ({ ...emptyForm(), template: query.get("template") ?? "" }));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [submitting, setSubmitting] = useState(false);
  const set = (patch: Partial<StudyForm>) => setForm((f) => ({ ...f, ...patch }));

  useEffect(() => {
    api
      .studyTemplates()
      .then((ts) => {
        setTemplates(ts);
        setForm((f) =>
          f.template && !f.name ? { ...f, name: ts.find((t) => t.name === f.template)?.title ?? "" } : f,
        );
      })
      .catch(setLoadError);
    api
      .presets()
      .then((ps) => {
        const pre = ps.filter((p) => p.kind === "pretrain");
        setPresets(pre);
        setForm((f) =>
          f.preset ? f : { ...f, preset: pre.find((p) => p.name === "fmnist_tiny")?.name ?? pre[0]?.name ?? "" },
        );
      })
      .catch(setLoadError);
    api
      .schema("pretrain")
      .then((s) => setFields(fieldsOf(s)))
      .catch(setLoadError);
    api
      .workers()
      .then((w) => {
        const qs = Array.from(new Set(w.data.filter((x) => x.online && x.queue).map((x) => x.queue as string)));
        setQueues(qs);
        setForm((f) => (f.queue || !qs.length ? f : { ...f, queue: qs[0] }));
      })
      .catch(() => {});
  }, []);

  const byPath = useMemo(() => new Map(fields.map((f) => [f.path, f])), [fields]);
  const template = templates?.find((t) => t.name === form.template) ?? null;
  const editable = template ? templateAxes(template) : null;

  const pickTemplate = (name: string) => {
    setErrors({});
    setForm((f) => ({
      ...f,
      template: name,
      axes: name ? [] : f.axes.length ? f.axes : [{ path: "", text: "" }],
      name:
        f.name && !templates?.some((t) => t.title === f.name)
          ? f.name
          : (templates?.find((t) => t.name === name)?.title ?? f.name),
    }));
  };
  const setAxis = (i: number, a: AxisForm) => setForm((f) => ({ ...f, axes: f.axes.map((x, j) => (j === i ? a : x)) }));
  const removeAxis = (i: number) => setForm((f) => ({ ...f, axes: f.axes.filter((_, j) => j !== i) }));

  const counts = form.axes.length
    ? form.axes.map((a) => splitValues(a.text).length)
    : template
      ? template.axes.map((a) => a.labels.length)
      : [];
  const nRuns = counts.length ? counts.reduce((a, b) => a * b, 1) : 0;

  const focusFirstError = () =>
    requestAnimationFrame(() => {
      const el = document.querySelector<HTMLElement>('[data-testid^="study-error-"]');
      el?.scrollIntoView({ block: "center" });
    });

  const submit = async (e: Event) => {
    e.preventDefault();
    const { body, errors: local } = buildStudyRequest(form, fields);
    if (!body) {
      setErrors(local);
      focusFirstError();
      return;
    }
    setSubmitting(true);
    setErrors({});
    try {
      const study = await api.createStudy(body);
      navigate(`/studies/${encodeURIComponent(study.id)}`);
    } catch (err) {
      setErrors(
        err instanceof ApiError && err.validation.length
          ? studyErrors(err.validation)
          : { "": err instanceof Error ? err.message : String(err) },
      );
      setSubmitting(false);
      focusFirstError();
    }
  };

  return {
    templates,
    presets,
    fields,
    queues,
    loadError,
    form,
    set,
    errors,
    setErrors,
    submitting,
    byPath,
    template,
    editable,
    pickTemplate,
    setAxis,
    removeAxis,
    nRuns,
    submit,
  };
}
