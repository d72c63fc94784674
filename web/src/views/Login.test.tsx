import { render } from "preact";
import { act } from "preact/test-utils";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LoginPage, loginError } from "./Login";

let host: HTMLElement | null = null;

function mount(url: string): HTMLElement {
  window.history.replaceState(null, "", url);
  host = document.createElement("div");
  document.body.appendChild(host);
  act(() => render(<LoginPage signedIn={false} />, host!));
  return host;
}

afterEach(() => {
  if (host) render(null, host);
  host?.remove();
  host = null;
  vi.unstubAllGlobals();
});

describe("the login page's errors", () => {
  it("says in a sentence that a login link was used or has expired", () => {
    const el = mount("/login-page?error=invalid-code");
    const shown = el.querySelector('[data-testid="login-error"]')!.textContent;
    expect(shown).toBe(loginError("invalid-code"));
    expect(shown).toContain("already used or has expired");
    expect(shown).toContain("mocolab admin login-link");
  });

  it("names an error it has no sentence for", () => {
    expect(loginError("weird")).toBe("Sign-in failed (weird).");
  });
});

describe("the token form", () => {
  it("posts the token in a JSON body, never in the URL, and shows a refusal", async () => {
    const sent: { url: string; init: RequestInit }[] = [];
    // the server's answer to a token it does not know (tests/server/test_auth.py checks the server's side)
    vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
      sent.push({ url, init });
      return new Response(JSON.stringify({ detail: "invalid token" }), { status: 401 });
    });
    const el = mount("/login-page");
    const input = el.querySelector<HTMLInputElement>('[data-testid="login-token"]')!;
    await act(() => {
      input.value = "mcl_secret";
      input.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await act(async () => {
      el.querySelector("form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
      await new Promise((r) => setTimeout(r, 0));
    });
    expect(sent).toHaveLength(1);
    expect(sent[0].url).toBe("/login");
    expect(sent[0].init.method).toBe("POST");
    expect(JSON.parse(String(sent[0].init.body))).toEqual({ token: "mcl_secret" });
    expect(sent[0].url).not.toContain("mcl_secret");
    expect(window.location.href).not.toContain("mcl_secret");
    expect(el.querySelector('[data-testid="login-error"]')!.textContent).toBe(loginError("invalid-token"));
  });
});
