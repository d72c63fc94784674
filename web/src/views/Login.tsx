import { useState } from "preact/hooks";
import { loginWithToken } from "../api/client";

/**
 * Paste a token: POST /login exchanges it for an HttpOnly session cookie, then the page goes on to `next`. A
 * login link (/login?code=...) that fails comes back here as ?error=invalid-code.
 */
export const LOGIN_ERRORS: Record<string, string> = {
  "invalid-token":
    "That token was not accepted: it is unknown, revoked or mistyped. Paste it again, or ask an admin for a new one.",
  "invalid-code": "This sign-in link was already used or has expired: run `mocolab admin login-link` for a new one.",
};

/** The sentence for an error code (the server's redirect or the form's own answer). */
export const loginError = (error: string): string => LOGIN_ERRORS[error] ?? `Sign-in failed (${error}).`;

export function LoginPage({ signedIn }: { signedIn: boolean }) {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(new URLSearchParams(window.location.search).get("error"));
  const next =
    new URLSearchParams(window.location.search).get("next") ??
    (window.location.pathname === "/login-page" ? "/" : window.location.pathname + window.location.search);
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = token.trim();
    if (!t || busy) return;
    setBusy(true);
    const failed = await loginWithToken(t);
    setBusy(false);
    if (failed) setError(failed);
    // a full load: the app starts again with the cookie (`next` is a path of this server only)
    else window.location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
  };
  return (
    <main class="login" id="main">
      <form class="card login-card" onSubmit={submit}>
        <h1>mocolab</h1>
        <p class="muted">MoCo v3 pretraining for the team. Paste an API token to sign in.</p>
        {error && (
          <p class="field-error" role="alert" data-testid="login-error">
            {loginError(error)}
          </p>
        )}
        {signedIn && <p class="muted small">You are already signed in; a new token replaces the session.</p>}
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          autoFocus
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          data-testid="login-token"
        />
        <button type="submit" class="btn primary" disabled={!token.trim() || busy} data-testid="login-submit">
          Sign in
        </button>
        <p class="muted small">
          <code>mocolab up</code> prints a login link; an admin creates tokens with
          <code> mocolab admin create-user NAME --token LABEL</code>.
        </p>
      </form>
    </main>
  );
}
