import { useState } from "preact/hooks";

/** Paste a token: the server's /login exchanges it for an HttpOnly session cookie and redirects back. */
const ERRORS: Record<string, string> = {
  "invalid-token":
    "That token was not accepted: it is unknown, revoked or mistyped. Paste it again, or ask an admin for a new one.",
};

export function LoginPage({ signedIn }: { signedIn: boolean }) {
  const [token, setToken] = useState("");
  const error = new URLSearchParams(window.location.search).get("error");
  const next =
    new URLSearchParams(window.location.search).get("next") ??
    (window.location.pathname === "/login-page" ? "/" : window.location.pathname + window.location.search);
  const submit = (e: Event) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return;
    window.location.assign(`/login?token=${encodeURIComponent(t)}&next=${encodeURIComponent(next)}`);
  };
  return (
    <main class="login" id="main">
      <form class="card login-card" onSubmit={submit}>
        <h1>mocolab</h1>
        <p class="muted">MoCo v3 pretraining for the team. Paste an API token to sign in.</p>
        {error && (
          <p class="field-error" role="alert" data-testid="login-error">
            {ERRORS[error] ?? `Sign-in failed (${error}).`}
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
        <button type="submit" class="btn primary" disabled={!token.trim()} data-testid="login-submit">
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
