import { describe, expect, it } from "vitest";
import type { ChannelPublic } from "../../api/types";
import {
  attemptText,
  channelErrors,
  channelRequest,
  deliveryHref,
  emptyChannelForm,
  formFromChannel,
  parseHeaders,
  rulesSummary,
  secretEditable,
  statusTone,
} from "./logic";

const channel = (over: Partial<ChannelPublic> = {}): ChannelPublic => ({
  id: "c1",
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
    expect(mail.body).toMatchObject({ kind: "email", to: ["a@x.org", "b@y.org"] });
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
        { loc: ["body", "rules", "alert_kinds", 0], msg: "unknown kind", type: "x" },
        { loc: ["body", "secret"], msg: "odd", type: "x" },
      ]),
    ).toEqual({
      url: "loopback not allowed",
      cooldown: "too long",
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
    expect(statusTone("retrying")).toBe("pending");
    expect(statusTone(null)).toBe("none");
    expect(attemptText({ time: "t", ok: true, status_code: 200, duration_ms: 12.4 })).toBe("HTTP 200 · in 12 ms");
    expect(attemptText({ time: "t", ok: false, error: "connection refused" })).toBe("connection refused");
    const d = { id: "d", channel_id: "c", event: "alert", status: "sent", attempts: [], created_at: "" };
    expect(deliveryHref({ ...d, run_id: "r 1", step: 40 })).toBe("/runs/r%201?step=40");
    expect(deliveryHref({ ...d, run_id: null })).toBeNull();
  });
});
