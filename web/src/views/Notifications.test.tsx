import { render } from "preact";
import { act } from "preact/test-utils";
import { afterEach, describe, expect, it, vi } from "vitest";
import { NotificationsPage } from "./Notifications";

let host: HTMLElement | null = null;
afterEach(() => {
  if (host) render(null, host);
  host?.remove();
  host = null;
  vi.unstubAllGlobals();
});
const settle = () => act(async () => await new Promise((r) => setTimeout(r, 20)));
const SECRET = "http://127.0.0.1:8123/hook?token=s3cret-value";

describe("the Notifications page", () => {
  it("shows a stored secret as 'set', never its value, and sends a new one only after Replace", async () => {
    const stored = {
      id: 1,
      team: "lab",
      project: null,
      name: "hooks",
      kind: "webhook",
      enabled: true,
      target_hint: "http://127.0.0.1:8123/…",
      has_secret: true,
      rules: {
        alert_kinds: null,
        severities: ["warning", "critical"],
        run_ends: ["failed"],
        evaluations: false,
        studies: false,
      },
      cooldown_s: 900,
      created_at: "2026-01-01T00:00:00Z",
    };
    const sent: { method: string; url: string; body: unknown }[] = [];
    vi.stubGlobal("fetch", async (url: string, init?: RequestInit) => {
      const method = init?.method ?? "GET";
      const body = init?.body ? JSON.parse(String(init.body)) : undefined;
      sent.push({ method, url, body });
      const json = (x: unknown) =>
        new Response(JSON.stringify(x), { status: 200, headers: { "Content-Type": "application/json" } });
      if (url === "/api/v1/channels") return json([stored]);
      if (url.startsWith("/api/v1/channels/1/deliveries")) return json([]);
      if (url === "/api/v1/channels/1" && method === "PATCH") return json({ ...stored, ...body, has_secret: true });
      return new Response("{}", { status: 404 });
    });
    window.history.replaceState(null, "", "/notifications?edit=1");
    host = document.createElement("div");
    document.body.appendChild(host);
    act(() => render(<NotificationsPage />, host!));
    await settle();

    const q = (id: string) => host!.querySelector<HTMLElement>(`[data-testid="${id}"]`);
    expect(q("channel-form")).not.toBeNull();
    expect(q("channel-secret-state")!.textContent).toBe("set");
    expect(q("channel-field-url")).toBeNull();
    expect(host!.innerHTML).not.toContain("s3cret");

    // Save without replacing: no secret in the PATCH
    await act(async () => {
      q("channel-submit")!.click();
      await new Promise((r) => setTimeout(r, 20));
    });
    const first = sent.find((s) => s.method === "PATCH")!;
    expect(first.body).not.toHaveProperty("url");
    expect(first.body).toMatchObject({ name: "hooks", cooldown_s: 900 });

    // Replace: an empty password input, then the new URL goes in the PATCH
    window.history.replaceState(null, "", "/notifications?edit=1");
    act(() => render(null, host!));
    act(() => render(<NotificationsPage />, host!));
    await settle();
    await act(async () => q("channel-secret-replace")!.click());
    const input = q("channel-field-url") as HTMLInputElement;
    expect(input.type).toBe("password");
    expect(input.value).toBe("");
    await act(async () => {
      input.value = SECRET;
      input.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await act(async () => {
      q("channel-submit")!.click();
      await new Promise((r) => setTimeout(r, 20));
    });
    const patches = sent.filter((s) => s.method === "PATCH");
    expect(patches).toHaveLength(2);
    expect(patches[1].body).toMatchObject({ url: SECRET });
    // saved: the form closed and the list shows the hint, not the secret
    expect(q("channel-form")).toBeNull();
    expect(host!.innerHTML).not.toContain("s3cret");
    expect(q("channel-target")!.textContent).toContain("127.0.0.1:8123");
  });
});
