import { describe, expect, it } from "vitest";
import type { ChannelPublic, DeliveryPublic } from "../../api/types";
import {
  attemptText,
  channelErrors,
  channelRequest,
  deliveryHref,
  deliveryWhat,
  emptyChannelForm,
  formFromChannel,
  parseHeaders,
  rulesSummary,
  secretEditable,
  statusTone,
  testResult,
} from "./logic";

const channel = (over: Partial<ChannelPublic> = {}): ChannelPublic => ({
  id: 1,
  team: "lab",
  project: null,
  name: "hooks",
  kind: "webhook",
  enabled: true,
  target_hint: "http://127.0.0.1:9/…",
  has_secret: true,
  rules: {
    alert_kinds: ["grad_spike", "stall"],
    severities: ["critical"],
    run_ends: ["failed"],
    evaluations: true,
    studies: false,
  },
  cooldown_s: 600,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  ...over,
});

describe("the channel form's secrets", () => {
  it("never holds a stored secret: an edit starts with empty secret fields and shows 'set'", () => {
    const f = formFromChannel(channel());
    expect(f.url).toBe("");
    expect(f.headers).toBe("");
    expect(f.secretSet).toBe(true);
    expect(secretEditable(f, true)).toBe(false);
    expect(secretEditable({ ...f, replacing: true }, true)).toBe(true);
    // a channel saved without a secret, or a new one: the inputs show
    expect(secretEditable(formFromChannel(channel({ has_secret: false })), true)).toBe(true);
    expect(secretEditable(emptyChannelForm(), false)).toBe(true);
  });

  it("sends the secret on create, leaves it out of an edit unless replaced, and sends the new one when replaced", () => {
    const create = channelRequest(
      {
        ...emptyChannelForm("webhook"),
        name: "h",
        url: " http://127.0.0.1:8080/hook?t=s3cret ",
        headers: "X-Token: abc",
      },
      null,
    );
    expect(create.errors).toEqual({});
    expect(create.body).toMatchObject({
      name: "h",
      kind: "webhook",
      url: "http://127.0.0.1:8080/hook?t=s3cret",
      headers: { "X-Token": "abc" },
    });

    const c = channel();
    const edit = channelRequest({ ...formFromChannel(c), name: "renamed" }, c);
    expect(edit.errors).toEqual({});
    expect(edit.body).not.toHaveProperty("url");
    expect(edit.body).not.toHaveProperty("headers");
    expect(edit.body).not.toHaveProperty("kind");
    expect(edit.body).toMatchObject({ name: "renamed", cooldown_s: 600, rules: c.rules });

    const replacing = { ...formFromChannel(c), replacing: true };
    expect(channelRequest(replacing, c).errors).toEqual({ url: "required" });
    expect(channelRequest({ ...replacing, url: "https://new.example/h" }, c).body).toMatchObject({
      url: "https://new.example/h",
    });
  });

  it("checks the kind's own fields: a URL for the webhooks, addresses for e-mail", () => {
    expect(channelRequest({ ...emptyChannelForm("slack"), name: "s", url: "ftp://x" }, null).errors).toEqual({
      url: "an http:// or https:// URL",
    });
    const mail = channelRequest({ ...emptyChannelForm("email"), name: "m", to: "a@x.org, b@y.org" }, null);
    expect(mail.body).toMatchObject({ kind: "email", emails: ["a@x.org", "b@y.org"] });
    expect(mail.body).not.toHaveProperty("url");
    expect(channelRequest({ ...emptyChannelForm("email"), name: "m", to: "a@x.org, nope" }, null).errors).toEqual({
      to: "not an address: nope",
    });
    expect(channelRequest({ ...emptyChannelForm("email"), name: "m" }, null).errors.to).toBe("at least one address");
  });

  it("refuses a missing name, a bad cooldown, an empty kind list and a bad header line", () => {
    const { errors } = channelRequest(
      {
        ...emptyChannelForm("webhook"),
        url: "http://x/h",
        headers: "no colon here",
        cooldown: "-1",
        alertKinds: [],
      },
      null,
    );
    expect(errors).toEqual({
      name: "required",
      cooldown: "a whole number of seconds, 0 or more",
      "rules.alert_kinds": "pick at least one kind, or all",
      headers: '"no colon here": write Name: value',
    });
    expect(parseHeaders("Authorization: Bearer a:b\n\nX-A: 1")).toEqual({
      headers: { Authorization: "Bearer a:b", "X-A": "1" },
      error: null,
    });
  });
});

describe("the rest of the page", () => {
  it("maps the API's 422 onto the form", () => {
    expect(
      channelErrors([
        { loc: ["body", "url"], msg: "loopback not allowed", type: "x" },
        { loc: ["body", "cooldown_s"], msg: "too long", type: "x" },
        { loc: ["body", "emails", 1], msg: "not an e-mail address", type: "x" },
        { loc: ["body", "rules", "alert_kinds", 0], msg: "unknown kind", type: "x" },
        { loc: ["body", "secret"], msg: "odd", type: "x" },
      ]),
    ).toEqual({
      url: "loopback not allowed",
      cooldown: "too long",
      to: "not an e-mail address",
      "rules.alert_kinds": "unknown kind",
      "": "secret: odd",
    });
  });

  it("summarises rules in words, with the new kinds' labels", () => {
    expect(rulesSummary(channel().rules)).toBe(
      "alerts: Gradient spike, Stalled run (critical) · run ends: failed · evaluations",
    );
    expect(rulesSummary({ alert_kinds: null, severities: [], run_ends: [], evaluations: false, studies: false })).toBe(
      "nothing (no rule selected)",
    );
  });

  it("reads deliveries and attempts", () => {
    expect(statusTone("sent")).toBe("ok");
    expect(statusTone("failed")).toBe("bad");
    expect(statusTone("pending")).toBe("pending");
    expect(statusTone(null)).toBe("none");
    const ok = { time: "t", ok: true, code: 200, reply: "ok", error: null, duration_ms: 12.4 };
    expect(attemptText(ok)).toBe("HTTP 200 · in 12 ms");
    expect(attemptText({ ...ok, ok: false, code: null, reply: null, error: "connection refused" })).toBe(
      "connection refused · in 12 ms",
    );
    expect(attemptText({ ...ok, ok: false, code: 503, reply: "down for maintenance" })).toBe(
      "HTTP 503 · down for maintenance · in 12 ms",
    );
    expect(attemptText({ ...ok, code: 250 }, "smtp")).toBe("SMTP 250 · in 12 ms");
    const d: DeliveryPublic = {
      id: 7,
      channel_id: 1,
      kind: "alert",
      title: "grad_spike at step 40",
      run_id: "r 1",
      step: 40,
      status: "sent",
      attempt_count: 1,
      suppressed: 0,
      created_at: "",
      next_attempt_at: null,
      sent_at: null,
      last_error: null,
      attempts: [ok],
    };
    expect(deliveryHref(d)).toBe("/runs/r%201?step=40");
    expect(deliveryHref({ ...d, run_id: null })).toBeNull();
    expect(deliveryWhat({ ...d, suppressed: 2 })).toBe("grad_spike at step 40 (+2 more within the cooldown)");
    expect(testResult(d, "webhook")).toEqual({ ok: true, text: "Test message delivered (HTTP 200 · in 12 ms)." });
    expect(
      testResult({ ...d, status: "pending", attempts: [{ ...ok, ok: false, code: 500, reply: "boom" }] }, "webhook"),
    ).toEqual({ ok: false, text: "The test was not delivered (HTTP 500 · boom · in 12 ms); see the delivery log." });
  });

  it("widens a channel to every project with all_projects, and sends e-mail recipients only when changed", () => {
    const c = channel({ project: "vit" });
    expect(channelRequest({ ...formFromChannel(c), project: "" }, c).body).toMatchObject({ all_projects: true });
    expect(channelRequest(formFromChannel(c), c).body).not.toHaveProperty("project");
    expect(channelRequest({ ...formFromChannel(c), project: "cnn" }, c).body).toMatchObject({ project: "cnn" });
    const mail = channel({ kind: "email", has_secret: false, target_hint: "a@x.org, b@y.org" });
    expect(channelRequest(formFromChannel(mail), mail).body).not.toHaveProperty("emails");
    expect(channelRequest({ ...formFromChannel(mail), to: "a@x.org" }, mail).body).toMatchObject({
      emails: ["a@x.org"],
    });
  });
});
