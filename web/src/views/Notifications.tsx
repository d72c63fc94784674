// The team's notification channels: where alerts, run ends, evaluations and studies are sent (a JSON webhook,
// a Slack incoming webhook, e-mail), what each sends (rules, cooldown), a test message, and each channel's
// delivery log with every attempt. Secrets (a webhook's URL and headers) are write-only: once saved the page
// shows "set" and offers Replace, never the value.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api/client";
import {
  CHANNEL_KINDS,
  RUN_ENDS,
  SEVERITIES,
  type ChannelKind,
  type ChannelPublic,
  type DeliveryPublic,
} from "../api/types";
import { navigate, useRoute } from "../router";
import { Empty, ErrorBox, Link, Loading, timeAgo } from "../ui/common";
import {
  anyPending,
  attemptText,
  channelErrors,
  channelRequest,
  deliveryHref,
  deliveryWhat,
  emptyChannelForm,
  testResult,
  fmtCooldown,
  formFromChannel,
  isUrlKind,
  rulesSummary,
  secretEditable,
  statusTone,
  type ChannelForm,
} from "./notifications/logic";
import { ALERT_KIND_NAMES, alertExplain, alertLabel } from "./run/alertKinds";

const KIND_TEXT: Record<ChannelKind, string> = {
  webhook: "Webhook (JSON POST)",
  slack: "Slack incoming webhook",
  email: "E-mail",
};
const POLL_MS = 3000;

function FieldError({ errors, k }: { errors: Record<string, string>; k: string }) {
  return errors[k] ? (
    <div class="field-error" role="alert" data-testid={`field-error-${k}`}>
      {errors[k]}
    </div>
  ) : null;
}

export function StatusChip({ status, title }: { status: string | null | undefined; title?: string }) {
  const tone = statusTone(status);
  return (
    <span class={`badge delivery-${tone}`} data-status={status ?? ""} title={title}>
      {status ?? "never sent"}
    </span>
  );
}

// ----------------------------------------------------------------- the form

function ChannelFormCard({
  existing,
  onDone,
  onCancel,
}: {
  existing: ChannelPublic | null;
  onDone: (c: ChannelPublic) => void;
  onCancel: () => void;
}) {
  const [form, setForm] = useState<ChannelForm>(() => (existing ? formFromChannel(existing) : emptyChannelForm()));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const ref = useRef<HTMLFormElement>(null);
  useEffect(() => ref.current?.querySelector<HTMLInputElement>("input")?.focus(), []);
  const set = <K extends keyof ChannelForm>(k: K, v: ChannelForm[K]) => {
    setForm((f) => ({ ...f, [k]: v }));
    const ek = k === "alertKinds" ? "rules.alert_kinds" : (k as string);
    if (errors[ek]) setErrors(({ [ek]: _, ...rest }) => rest);
  };
  const toggle = <T extends string>(list: T[], v: T, on: boolean): T[] =>
    on ? Array.from(new Set([...list, v])) : list.filter((x) => x !== v);
  const editing = existing !== null;
  const showSecret = secretEditable(form, editing);

  const submit = async (e: Event) => {
    e.preventDefault();
    const req = channelRequest(form, existing);
    if (!req.body) {
      setErrors(req.errors);
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      const c = existing ? await api.updateChannel(existing.id, req.body) : await api.createChannel(req.body);
      onDone(c);
    } catch (err) {
      if (err instanceof ApiError && err.validation.length) setErrors(channelErrors(err.validation));
      else setErrors({ "": err instanceof Error ? err.message : String(err) });
      setBusy(false);
    }
  };

  const text = (k: "name" | "project" | "url" | "to" | "cooldown", extra: Record<string, unknown> = {}) => ({
    name: k,
    value: form[k],
    "data-testid": `channel-field-${k}`,
    "aria-invalid": errors[k] ? true : undefined,
    spellcheck: false,
    onInput: (e: Event) => set(k, (e.target as HTMLInputElement).value),
    ...extra,
  });

  return (
    <form ref={ref} class="card channel-form" onSubmit={submit} noValidate data-testid="channel-form">
      <h2>{editing ? `Edit ${existing.name}` : "Add a channel"}</h2>
      <div class="form-top">
        <label>
          Name
          <input {...text("name", { placeholder: "e.g. #training-alerts" })} />
          <FieldError errors={errors} k="name" />
        </label>
        <label>
          Kind
          <select
            name="kind"
            value={form.kind}
            disabled={editing}
            data-testid="channel-field-kind"
            title={editing ? "A channel's kind is fixed: add a new channel for another kind" : undefined}
            onChange={(e) => set("kind", (e.target as HTMLSelectElement).value as ChannelKind)}
          >
            {CHANNEL_KINDS.map((k) => (
              <option key={k} value={k}>
                {KIND_TEXT[k]}
              </option>
            ))}
          </select>
          <FieldError errors={errors} k="kind" />
        </label>
        <label>
          Project <span class="muted small">(empty = every project)</span>
          <input {...text("project", { placeholder: "all projects" })} />
          <FieldError errors={errors} k="project" />
        </label>
      </div>

      {isUrlKind(form.kind) && (
        <fieldset class="secret" data-testid="channel-secret">
          <legend>
            {form.kind === "slack" ? "Slack webhook URL" : "Webhook"}{" "}
            <span class="muted small">(secret: write-only, never shown again once saved)</span>
          </legend>
          {showSecret ? (
            <>
              <label class="wide">
                URL
                <input
                  {...text("url", {
                    type: "password",
                    autocomplete: "off",
                    placeholder:
                      form.kind === "slack" ? "https://hooks.slack.com/services/…" : "https://example.org/hooks/…",
                  })}
                />
                <FieldError errors={errors} k="url" />
              </label>
              {form.kind === "webhook" && (
                <label class="wide">
                  Headers{" "}
                  <span class="muted small">(optional, Name: value one a line, e.g. Authorization: Bearer …)</span>
                  <textarea
                    name="headers"
                    rows={2}
                    spellcheck={false}
                    autocomplete="off"
                    data-testid="channel-field-headers"
                    value={form.headers}
                    onInput={(e) => set("headers", (e.target as HTMLTextAreaElement).value)}
                  />
                  <FieldError errors={errors} k="headers" />
                </label>
              )}
              {form.kind === "webhook" && (
                <label>
                  Signing secret{" "}
                  <span class="muted small">(optional: each call carries X-Mocolab-Signature, an HMAC-SHA256)</span>
                  <input
                    type="password"
                    name="signing_secret"
                    autocomplete="off"
                    value={form.signingSecret}
                    data-testid="channel-field-signing_secret"
                    onInput={(e) => set("signingSecret", (e.target as HTMLInputElement).value)}
                  />
                  <FieldError errors={errors} k="signing_secret" />
                </label>
              )}
              {editing && form.secretSet && (
                <button type="button" class="btn small ghost" onClick={() => set("replacing", false)}>
                  Keep the stored one
                </button>
              )}
            </>
          ) : (
            <div class="secret-set">
              <span class="badge delivery-ok" data-testid="channel-secret-state">
                set
              </span>
              <span class="muted small">
                The URL{form.kind === "webhook" ? " and headers are" : " is"} stored; the server never sends{" "}
                {form.kind === "webhook" ? "them" : "it"} back. Target: <code>{existing?.target_hint}</code>
              </span>
              <button
                type="button"
                class="btn small"
                data-testid="channel-secret-replace"
                onClick={() => set("replacing", true)}
              >
                Replace
              </button>
            </div>
          )}
        </fieldset>
      )}
      {form.kind === "email" && (
        <label class="wide block">
          Recipients <span class="muted small">(comma-separated; the server's SMTP settings send them)</span>
          <input {...text("to", { placeholder: "ml-team@example.org" })} />
          <FieldError errors={errors} k="to" />
        </label>
      )}

      <fieldset class="rules" data-testid="channel-rules">
        <legend>What it sends</legend>
        <div class="rule-row">
          <span class="rule-name">Alerts</span>
          {SEVERITIES.map((s) => (
            <label class="check" key={s}>
              <input
                type="checkbox"
                data-testid={`channel-rule-sev-${s}`}
                checked={form.severities.includes(s)}
                onChange={(e) => set("severities", toggle(form.severities, s, (e.target as HTMLInputElement).checked))}
              />
              {s}
            </label>
          ))}
          <label class="check">
            <input
              type="checkbox"
              data-testid="channel-rule-all-kinds"
              checked={form.alertKinds === null}
              onChange={(e) => set("alertKinds", (e.target as HTMLInputElement).checked ? null : [...ALERT_KIND_NAMES])}
            />
            every kind
          </label>
        </div>
        {form.alertKinds !== null && (
          <div class="rule-kinds">
            {ALERT_KIND_NAMES.map((k) => (
              <label class="check" key={k} title={alertExplain(k) ?? undefined}>
                <input
                  type="checkbox"
                  data-testid={`channel-rule-kind-${k}`}
                  checked={form.alertKinds!.includes(k)}
                  onChange={(e) =>
                    set("alertKinds", toggle(form.alertKinds ?? [], k, (e.target as HTMLInputElement).checked))
                  }
                />
                {alertLabel(k)}
              </label>
            ))}
          </div>
        )}
        <FieldError errors={errors} k="rules.alert_kinds" />
        <FieldError errors={errors} k="rules.severities" />
        <div class="rule-row">
          <span class="rule-name">Run ends</span>
          {RUN_ENDS.map((s) => (
            <label class="check" key={s}>
              <input
                type="checkbox"
                data-testid={`channel-rule-end-${s}`}
                checked={form.runEnds.includes(s)}
                onChange={(e) => set("runEnds", toggle(form.runEnds, s, (e.target as HTMLInputElement).checked))}
              />
              {s}
            </label>
          ))}
        </div>
        <FieldError errors={errors} k="rules.run_ends" />
        <div class="rule-row">
          <span class="rule-name">Results</span>
          <label class="check">
            <input
              type="checkbox"
              data-testid="channel-rule-evaluations"
              checked={form.evaluations}
              onChange={(e) => set("evaluations", (e.target as HTMLInputElement).checked)}
            />
            evaluations finished
          </label>
          <label class="check">
            <input
              type="checkbox"
              data-testid="channel-rule-studies"
              checked={form.studies}
              onChange={(e) => set("studies", (e.target as HTMLInputElement).checked)}
            />
            studies finished
          </label>
        </div>
        <div class="rule-row">
          <label>
            Cooldown (s){" "}
            <span class="muted small">(per run and kind: one message per incident, then quiet this long)</span>
            <input {...text("cooldown", { inputMode: "numeric", size: 8 })} />
            <FieldError errors={errors} k="cooldown" />
          </label>
          <label class="check">
            <input
              type="checkbox"
              data-testid="channel-field-enabled"
              checked={form.enabled}
              onChange={(e) => set("enabled", (e.target as HTMLInputElement).checked)}
            />
            enabled
          </label>
        </div>
      </fieldset>
      {errors[""] && (
        <div class="state error" role="alert" data-testid="form-error">
          {errors[""]}
        </div>
      )}
      <div class="form-actions static">
        <button type="submit" class="btn primary" disabled={busy} data-testid="channel-submit">
          {busy ? "Saving…" : editing ? "Save" : "Add channel"}
        </button>
        <button type="button" class="btn ghost" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

// ----------------------------------------------------------------- the delivery log

function DeliveryLog({ channel, tick }: { channel: ChannelPublic; tick: number }) {
  const [rows, setRows] = useState<DeliveryPublic[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [more, setMore] = useState(true);
  const [refreshed, setRefreshed] = useState(0);
  const LIMIT = 50;

  const load = (signal?: AbortSignal) =>
    api
      .deliveries(channel.id, { limit: LIMIT }, signal)
      .then((r) => {
        setRows((cur) => {
          // keep older pages already loaded below the fresh first page
          const fresh = r;
          if (!cur || cur.length <= LIMIT) return fresh;
          const seen = new Set(fresh.map((d) => d.id));
          return [...fresh, ...cur.filter((d) => !seen.has(d.id))];
        });
        setMore((m) => m && r.length >= LIMIT);
        setError(null);
        setRefreshed(Date.now());
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });

  useEffect(() => {
    const ctrl = new AbortController();
    void load(ctrl.signal);
    return () => ctrl.abort();
  }, [channel.id, tick]);
  // Poll while the log is open: attempts and retries happen in the background.
  useEffect(() => {
    const t = window.setInterval(() => void load(), POLL_MS);
    return () => clearInterval(t);
  }, [channel.id]);

  const older = () => {
    const last = rows?.[rows.length - 1];
    if (!last) return;
    api
      .deliveries(channel.id, { limit: LIMIT, before: last.id })
      .then((r) => {
        setRows((cur) => [...(cur ?? []), ...r]);
        setMore(r.length >= LIMIT);
      })
      .catch(setError);
  };

  return (
    <div class="delivery-log" data-testid="delivery-log" data-channel-id={channel.id}>
      <div class="delivery-log-head">
        <b>Delivery log</b>
        <span class="muted small">
          {rows && anyPending(rows) ? "retrying in the background · " : ""}refreshed every {POLL_MS / 1000} s
          {refreshed ? ` (last ${new Date(refreshed).toLocaleTimeString()})` : ""}
        </span>
        <button type="button" class="btn tiny" onClick={() => void load()} data-testid="delivery-refresh">
          Refresh
        </button>
      </div>
      {error ? <ErrorBox error={error} retry={() => void load()} /> : null}
      {rows === null && !error ? (
        <Loading what="deliveries" />
      ) : rows && rows.length === 0 ? (
        <Empty>Nothing sent yet. "Send a test" sends a message now.</Empty>
      ) : rows ? (
        <table class="simple deliveries" data-testid="deliveries-table">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">What</th>
              <th scope="col">Status</th>
              <th scope="col">Attempts</th>
              <th scope="col">Next retry</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((d) => {
              const href = deliveryHref(d);
              return (
                <tr
                  key={d.id}
                  data-testid="delivery-row"
                  data-delivery-id={d.id}
                  data-status={d.status}
                  data-kind={d.kind}
                >
                  <td class="small" title={d.created_at}>
                    {timeAgo(d.created_at)}
                  </td>
                  <td>{href ? <Link href={href}>{deliveryWhat(d)}</Link> : deliveryWhat(d)}</td>
                  <td>
                    <StatusChip status={d.status} />
                  </td>
                  <td>
                    {d.attempts.length === 0 ? (
                      <span class="muted small">none yet</span>
                    ) : (
                      <details data-testid="delivery-attempts">
                        <summary>
                          {d.attempts.length} attempt{d.attempts.length > 1 ? "s" : ""}
                        </summary>
                        <ol class="attempts">
                          {d.attempts.map((a, i) => (
                            <li key={i} data-testid="delivery-attempt" data-ok={a.ok ? "1" : "0"}>
                              <span class="muted small" title={a.time}>
                                {timeAgo(a.time)}
                              </span>{" "}
                              <span class={a.ok ? "" : "bad"}>
                                {attemptText(a, channel.kind === "email" ? "smtp" : "http")}
                              </span>
                            </li>
                          ))}
                        </ol>
                      </details>
                    )}
                  </td>
                  <td class="small" title={d.next_attempt_at ?? undefined}>
                    {d.next_attempt_at ? new Date(parseIso(d.next_attempt_at)).toLocaleTimeString() : "—"}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
      {rows && rows.length > 0 && more && (
        <button type="button" class="btn small" onClick={older} data-testid="delivery-older">
          Older
        </button>
      )}
    </div>
  );
}

const parseIso = (iso: string) => Date.parse(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);

// ----------------------------------------------------------------- the page

function ChannelRow({
  c,
  last,
  onEdit,
  onChanged,
  onDeleted,
  onRefresh,
}: {
  c: ChannelPublic;
  last: DeliveryPublic | null | undefined;
  onEdit: () => void;
  onChanged: (c: ChannelPublic) => void;
  onDeleted: () => void;
  /** Refetch the list (the last delivery's status after a test). */
  onRefresh: () => void;
}) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState<string | null>(null);
  const [test, setTest] = useState<{ ok: boolean; text: string } | null>(null);
  const [err, setErr] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const lastStatus = last?.status ?? null;
  const [enabled, setEnabled] = useState(c.enabled);
  useEffect(() => setEnabled(c.enabled), [c.enabled]);

  const run = async (what: string, fn: () => Promise<void>) => {
    setBusy(what);
    setErr(null);
    try {
      await fn();
    } catch (e) {
      setErr(e instanceof Error ? e.message : String(e));
    }
    setBusy(null);
  };

  return (
    <>
      <tr data-testid="channel-row" data-channel-id={c.id} data-kind={c.kind} class={enabled ? "" : "dim"}>
        <td>
          <b>{c.name}</b>
          <div class="muted small">{c.project ? `project ${c.project}` : "every project"}</div>
        </td>
        <td>{KIND_TEXT[c.kind] ?? c.kind}</td>
        <td class="mono small clip" data-testid="channel-target" title={c.target_hint}>
          {c.target_hint}
          {c.has_secret && <span class="badge quiet">secret set</span>}
        </td>
        <td class="small" data-testid="channel-rules-summary">
          {rulesSummary(c.rules)}
          <div class="muted">cooldown {fmtCooldown(c.cooldown_s)}</div>
        </td>
        <td>
          <label class="check">
            <input
              type="checkbox"
              checked={enabled}
              disabled={busy !== null}
              data-testid="channel-enabled"
              aria-label={`${c.name} enabled`}
              onChange={(e) => {
                // shown at once; back to the server's state when the PATCH fails
                const on = (e.target as HTMLInputElement).checked;
                setEnabled(on);
                void run("enable", async () => {
                  try {
                    onChanged(await api.updateChannel(c.id, { enabled: on }));
                  } catch (err) {
                    setEnabled(c.enabled);
                    throw err;
                  }
                });
              }}
            />
            {enabled ? "on" : "off"}
          </label>
        </td>
        <td data-testid="channel-last-status" data-status={lastStatus ?? ""}>
          <StatusChip status={lastStatus} title={last?.last_error ?? last?.title} />
          {last && (
            <div class="muted small" title={last.created_at}>
              {timeAgo(last.created_at)}
            </div>
          )}
        </td>
        <td>
          <div class="channel-actions">
            <button
              type="button"
              class="btn small"
              disabled={busy !== null}
              data-testid="channel-test"
              onClick={() =>
                run("test", async () => {
                  setTest(null);
                  try {
                    setTest(testResult(await api.testChannel(c.id), c.kind));
                  } catch (e) {
                    setTest({
                      ok: false,
                      text: `The test could not be sent: ${e instanceof Error ? e.message : String(e)}`,
                    });
                  }
                  setOpen(true);
                  setTick((t) => t + 1);
                  onRefresh();
                })
              }
            >
              {busy === "test" ? "Sending…" : "Send a test"}
            </button>
            <button
              type="button"
              class="btn small"
              aria-expanded={open}
              data-testid="channel-log"
              onClick={() => setOpen((o) => !o)}
            >
              {open ? "Hide log" : "Delivery log"}
            </button>
            <button type="button" class="btn small" data-testid="channel-edit" onClick={onEdit}>
              Edit
            </button>
            <button
              type="button"
              class="btn small danger"
              disabled={busy !== null}
              data-testid="channel-delete"
              onClick={() =>
                confirm(`Delete the channel "${c.name}"? Its delivery log goes with it.`) &&
                run("delete", async () => {
                  await api.deleteChannel(c.id);
                  onDeleted();
                })
              }
            >
              Delete
            </button>
          </div>
        </td>
      </tr>
      {(test || err) && (
        <tr class="sub-row">
          <td colSpan={7}>
            {test && (
              <div
                class={`test-result ${test.ok ? "ok" : "bad"}`}
                role="status"
                data-testid="channel-test-result"
                data-ok={test.ok ? "1" : "0"}
              >
                {test.text}
              </div>
            )}
            {err && (
              <div class="test-result bad" role="alert" data-testid="action-error">
                {err}
              </div>
            )}
          </td>
        </tr>
      )}
      {open && (
        <tr class="sub-row">
          <td colSpan={7}>
            <DeliveryLog channel={c} tick={tick} />
          </td>
        </tr>
      )}
    </>
  );
}

export function NotificationsPage() {
  const route = useRoute();
  const editId = route.query.get("edit");
  const adding = route.query.get("add") === "1";
  const [channels, setChannels] = useState<ChannelPublic[] | null>(null);
  const [last, setLast] = useState<Record<number, DeliveryPublic | null>>({});
  const [error, setError] = useState<unknown>(null);

  const load = () => {
    setError(null);
    api
      .channels()
      .then((cs) => {
        setChannels(cs);
        // the last delivery of each channel, unless the server already says it
        for (const c of cs)
          api
            .deliveries(c.id, { limit: 1 })
            .then((r) => setLast((cur) => ({ ...cur, [c.id]: r[0] ?? null })))
            .catch(() => {});
      })
      .catch(setError);
  };
  useEffect(load, []);
  useEffect(() => {
    const t = window.setInterval(load, 15_000);
    return () => clearInterval(t);
  }, []);

  const go = (q: string) => navigate(`/notifications${q}`, true);
  const editing = editId ? (channels?.find((c) => String(c.id) === editId) ?? null) : null;
  const replace = (c: ChannelPublic) =>
    setChannels((cur) =>
      cur ? (cur.some((x) => x.id === c.id) ? cur.map((x) => (x.id === c.id ? c : x)) : [...cur, c]) : [c],
    );

  return (
    <main class="page notifications">
      <div class="page-head">
        <h1>Notifications</h1>
        <span class="spacer" />
        {!adding && !editing && (
          <button type="button" class="btn primary" data-testid="add-channel-button" onClick={() => go("?add=1")}>
            Add channel
          </button>
        )}
      </div>
      <p class="muted small">
        Where the team hears about its runs: stability alerts (with the evidence, the remedy, the last healthy
        checkpoint and a link to the run at that step), run ends, finished evaluations and studies. One message per
        incident; retried in the background until the receiver takes it.
      </p>
      {(adding || editing) && (
        <ChannelFormCard
          key={editing?.id ?? "new"}
          existing={editing}
          onCancel={() => go("")}
          onDone={(c) => {
            replace(c);
            go("");
          }}
        />
      )}
      {error ? <ErrorBox error={error} retry={load} /> : null}
      {channels === null && !error ? (
        <Loading what="channels" />
      ) : channels && channels.length === 0 ? (
        <Empty>
          No channels yet: alerts show on the run pages only.{" "}
          <button type="button" class="linklike" onClick={() => go("?add=1")}>
            Add one
          </button>
          .
        </Empty>
      ) : channels ? (
        <div class="table-wrap">
          <table class="runs channels" data-testid="channels-table">
            <thead>
              <tr>
                <th scope="col">Channel</th>
                <th scope="col">Kind</th>
                <th scope="col">Target</th>
                <th scope="col">Sends</th>
                <th scope="col">Enabled</th>
                <th scope="col">Last delivery</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {channels.map((c) => (
                <ChannelRow
                  key={c.id}
                  c={c}
                  last={last[c.id]}
                  onEdit={() => go(`?edit=${encodeURIComponent(c.id)}`)}
                  onChanged={replace}
                  onDeleted={() => setChannels((cur) => (cur ?? []).filter((x) => x.id !== c.id))}
                  onRefresh={load}
                />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </main>
  );
}
