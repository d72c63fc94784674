// The Notifications page's pure logic: the channel form (kind-specific fields; secrets write-only), the request
// it sends (POST on create, PATCH with only what changed on edit: a secret is sent only when typed anew), the
// API's 422 mapped onto the form, and how rules, deliveries and attempts read.
import type {
  ChannelKind,
  ChannelPublic,
  ChannelRules,
  ChannelWrite,
  DeliveryAttempt,
  DeliveryPublic,
  RunEnd,
  Severity,
  ValidationItem,
} from "../../api/types";
import { RUN_ENDS, SEVERITIES } from "../../api/types";
import { alertLabel } from "../run/alertKinds";

export interface ChannelForm {
  name: string;
  kind: ChannelKind;
  /** "" = every project of the team */
  project: string;
  enabled: boolean;
  /** webhook / slack: the URL; write-only (empty on edit unless replacing) */
  url: string;
  /** webhook: extra headers, "Name: value" one a line; write-only like the URL */
  headers: string;
  /** webhook: the key that signs each call (X-Mocolab-Signature); write-only */
  signingSecret: string;
  /** email: the recipients, comma- or line-separated */
  to: string;
  /** null = every alert kind */
  alertKinds: string[] | null;
  severities: Severity[];
  runEnds: RunEnd[];
  evaluations: boolean;
  studies: boolean;
  cooldown: string;
  /** Editing a channel whose secret is stored: the form shows "set" until Replace is pressed. */
  secretSet: boolean;
  replacing: boolean;
}

/** The server's defaults (server/notify/schemas.py): every end, evaluations and studies, 30 min cooldown. */
export const DEFAULT_COOLDOWN_S = 1800;

export function emptyChannelForm(kind: ChannelKind = "webhook"): ChannelForm {
  return {
    name: "",
    kind,
    project: "",
    enabled: true,
    url: "",
    headers: "",
    signingSecret: "",
    to: "",
    alertKinds: null,
    severities: ["warning", "critical"],
    runEnds: ["succeeded", "failed", "lost"],
    evaluations: true,
    studies: true,
    cooldown: String(DEFAULT_COOLDOWN_S),
    secretSet: false,
    replacing: false,
  };
}

/** The form of an existing channel: every setting, but never a secret (the API does not return them). */
export function formFromChannel(c: ChannelPublic): ChannelForm {
  return {
    ...emptyChannelForm(c.kind),
    name: c.name,
    project: c.project ?? "",
    enabled: c.enabled,
    to: c.kind === "email" ? c.target_hint : "",
    alertKinds: c.rules.alert_kinds === null ? null : [...c.rules.alert_kinds],
    severities: [...c.rules.severities],
    runEnds: [...c.rules.run_ends],
    evaluations: c.rules.evaluations,
    studies: c.rules.studies,
    cooldown: String(c.cooldown_s),
    secretSet: c.has_secret,
    replacing: false,
  };
}

/** Whether the secret inputs are shown (creating, replacing, or nothing stored yet), or the "set" state. */
export function secretEditable(form: ChannelForm, editing: boolean): boolean {
  return !editing || form.replacing || !form.secretSet;
}

export const isUrlKind = (k: ChannelKind) => k === "webhook" || k === "slack";

/** "Name: value" lines -> headers; the errors say which line is wrong. */
export function parseHeaders(text: string): { headers: Record<string, string>; error: string | null } {
  const headers: Record<string, string> = {};
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  for (const line of lines) {
    const i = line.indexOf(":");
    const name = i > 0 ? line.slice(0, i).trim() : "";
    if (!name || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name))
      return { headers: {}, error: `"${line}": write Name: value` };
    headers[name] = line.slice(i + 1).trim();
  }
  return { headers, error: null };
}

export function parseRecipients(text: string): string[] {
  return text
    .split(/[\s,;]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

export function rulesOf(form: ChannelForm): ChannelRules {
  return {
    alert_kinds: form.alertKinds === null ? null : [...form.alertKinds],
    severities: SEVERITIES.filter((s) => form.severities.includes(s)),
    run_ends: RUN_ENDS.filter((e) => form.runEnds.includes(e)),
    evaluations: form.evaluations,
    studies: form.studies,
  };
}

/**
 * The request the form sends, or the browser's own errors by form key (name, url, headers, to, cooldown,
 * rules.alert_kinds). On edit (`existing`), a PATCH with the settings and, only when typed anew, the secret.
 */
export function channelRequest(
  form: ChannelForm,
  existing: ChannelPublic | null,
): { body: ChannelWrite | null; errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const name = form.name.trim();
  if (!name) errors.name = "required";
  else if (name.length > 64) errors.name = "at most 64 characters";
  const cooldown = Number(form.cooldown.trim());
  if (form.cooldown.trim() === "" || !Number.isInteger(cooldown) || cooldown < 0)
    errors.cooldown = "a whole number of seconds, 0 or more";
  if (form.alertKinds !== null && form.alertKinds.length === 0 && form.severities.length > 0)
    errors["rules.alert_kinds"] = "pick at least one kind, or all";
  const project = form.project.trim();
  const body: ChannelWrite = { name, enabled: form.enabled, rules: rulesOf(form), cooldown_s: cooldown };
  if (!existing) {
    body.kind = form.kind;
    if (project) body.project = project;
  } else if (project && project !== existing.project) body.project = project;
  else if (!project && existing.project !== null) body.all_projects = true; // PATCH: a null project means unchanged
  const sendSecret = secretEditable(form, existing !== null);
  if (isUrlKind(form.kind) && sendSecret) {
    const url = form.url.trim();
    if (!url) errors.url = "required";
    else if (!/^https?:\/\/[^\s/]+/i.test(url)) errors.url = "an http:// or https:// URL";
    else body.url = url;
    if (form.kind === "webhook" && form.headers.trim()) {
      const h = parseHeaders(form.headers);
      if (h.error) errors.headers = h.error;
      else body.headers = h.headers;
    }
    if (form.kind === "webhook" && form.signingSecret) {
      if (form.signingSecret.length < 8) errors.signing_secret = "at least 8 characters";
      else body.signing_secret = form.signingSecret;
    }
  }
  if (form.kind === "email") {
    const to = parseRecipients(form.to);
    const bad = to.find((a) => !/^[^@\s]+@[^@\s]+$/.test(a));
    if (!to.length) errors.to = "at least one address";
    else if (bad) errors.to = `not an address: ${bad}`;
    else if (!existing || to.join(",") !== parseRecipients(existing.target_hint).join(",")) body.emails = to;
  }
  return Object.keys(errors).length ? { body: null, errors } : { body, errors: {} };
}

const FORM_KEYS = ["name", "kind", "project", "url", "headers", "signing_secret", "to", "cooldown", "enabled"];
/** The API's field names that the form calls otherwise. */
const API_TO_FORM: Record<string, string> = { cooldown_s: "cooldown", emails: "to", all_projects: "project" };

/** The API's 422 items by form key: ["body", "cooldown_s"] -> cooldown, ["body", "rules", "severities", 0] ->
 * rules.severities; anything else under "" (atop the form). */
export function channelErrors(detail: ValidationItem[]): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (k: string, msg: string) => (out[k] = out[k] ? `${out[k]}; ${msg}` : msg);
  for (const item of detail) {
    const loc = (item.loc ?? []).map(String);
    const rest = loc[0] === "body" ? loc.slice(1) : loc;
    const head = API_TO_FORM[rest[0]] ?? rest[0] ?? "";
    if (head === "rules" && rest[1]) add(`rules.${rest[1]}`, item.msg);
    else if (FORM_KEYS.includes(head)) add(head, item.msg);
    else add("", rest.length ? `${rest.join(".")}: ${item.msg}` : item.msg);
  }
  return out;
}

/** One line for the channel list: "alerts: all kinds · warning, critical · run ends: failed, lost · evaluations". */
export function rulesSummary(r: ChannelRules): string {
  const parts: string[] = [];
  if (r.severities.length) {
    const kinds =
      r.alert_kinds === null
        ? "all kinds"
        : r.alert_kinds.length <= 3
          ? r.alert_kinds.map(alertLabel).join(", ")
          : `${r.alert_kinds.length} kinds`;
    parts.push(`alerts: ${kinds} (${r.severities.join(", ")})`);
  }
  if (r.run_ends.length) parts.push(`run ends: ${r.run_ends.join(", ")}`);
  if (r.evaluations) parts.push("evaluations");
  if (r.studies) parts.push("studies");
  return parts.length ? parts.join(" · ") : "nothing (no rule selected)";
}

export function fmtCooldown(s: number): string {
  if (s === 0) return "none";
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

/** A status's tone for its chip: ok (sent), bad (failed: gave up), pending (waiting for its next try). */
export function statusTone(status: string | null | undefined): "ok" | "bad" | "pending" | "none" {
  if (!status) return "none";
  if (status === "sent") return "ok";
  if (status === "failed") return "bad";
  return "pending";
}

/** What one attempt got: "HTTP 200 · in 12 ms", "HTTP 500 · upstream down · in 3 ms", "connection refused". */
export function attemptText(a: DeliveryAttempt, kind: "http" | "smtp" = "http"): string {
  const parts: string[] = [];
  if (a.code !== null && a.code !== undefined) parts.push(`${kind === "smtp" ? "SMTP" : "HTTP"} ${a.code}`);
  if (a.error) parts.push(a.error);
  else if (a.reply && !a.ok) parts.push(a.reply.slice(0, 200));
  if (!parts.length) parts.push(a.ok ? "delivered" : "failed");
  if (a.duration_ms !== null && a.duration_ms !== undefined) parts.push(`in ${Math.round(a.duration_ms)} ms`);
  return parts.join(" · ");
}

/** What a delivery was about, in a few words (its title, and the incidents the cooldown folded into it). */
export function deliveryWhat(d: DeliveryPublic): string {
  const title = d.title || d.kind.replace(/_/g, " ");
  return d.suppressed > 0 ? `${title} (+${d.suppressed} more within the cooldown)` : title;
}

/** The run page link of a delivery about a run (at its step, as the message's own link). */
export function deliveryHref(d: DeliveryPublic): string | null {
  if (!d.run_id) return null;
  const base = `/runs/${encodeURIComponent(d.run_id)}`;
  return d.step !== null && d.step !== undefined ? `${base}?step=${d.step}` : base;
}

/** Whether any delivery may still change (the log polls while one does). */
export function anyPending(ds: DeliveryPublic[]): boolean {
  return ds.some((d) => statusTone(d.status) === "pending");
}

/** The "Send a test" answer (the delivery, tried once) in one line. */
export function testResult(d: DeliveryPublic, kind: ChannelKind): { ok: boolean; text: string } {
  const last = d.attempts[d.attempts.length - 1];
  const how = last ? ` (${attemptText(last, kind === "email" ? "smtp" : "http")})` : "";
  if (d.status === "sent") return { ok: true, text: `Test message delivered${how}.` };
  return {
    ok: false,
    text: `The test was not delivered${how}${!last && d.last_error ? `: ${d.last_error}` : ""}; see the delivery log.`,
  };
}
