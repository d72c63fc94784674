"""The transports: one HTTP POST of a JSON body (webhook, Slack) and one SMTP conversation (e-mail), each
returning an `Outcome` the delivery loop records as an attempt. Nothing here raises for a receiver's failure.

HTTP: the URL is checked and its host resolved (`urls.resolve`), the connection goes to that address (TLS
still checks the URL's host name), redirects are not followed, the whole call has a timeout, and at most
`MAX_REPLY` bytes of the answer are read. 2xx is success; 408, 425, 429 and 5xx and network errors are
retried; any other answer is a permanent failure (a wrong URL does not become right by trying again).

SMTP: TLS from the first byte (MOCOLAB_SMTP_SSL) or STARTTLS (required when MOCOLAB_SMTP_STARTTLS, the default),
then AUTH when a user is set, then MAIL, RCPT for each address and DATA; the DATA reply is recorded. A 5xx to
the recipients or the message is permanent; everything else (4xx, a server down) is retried.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlunsplit

import httpx

from server.core.config import Settings
from server.notify import urls

MAX_REPLY = 64 * 1024
RETRY_STATUS = {408, 425, 429}
USER_AGENT = "mocolab-notify/1"


@dataclass
class Outcome:
    ok: bool
    code: int | None = None
    reply: str | None = None
    error: str | None = None
    permanent: bool = False
    duration_ms: float = 0.0


def redact(text: str | None, secrets: list[str]) -> str | None:
    """`text` with every secret (the URL, its path, header values) replaced: errors are shown in the log."""
    if text is None:
        return None
    for s in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(s, "[secret]")
    return text[:2000]


def post_json(url: str, body: bytes, headers: dict[str, str], *, allow: list[urls.Network],
              timeout_s: float) -> Outcome:
    started = time.monotonic()
    outcome = _post(url, body, headers, allow=allow, timeout_s=timeout_s)
    outcome.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return outcome


def _post(url: str, body: bytes, headers: dict[str, str], *, allow: list[urls.Network], timeout_s: float) -> Outcome:
    try:
        target = urls.resolve(url, allow)
    except urls.UnsafeUrl as exc:
        # a name that does not resolve now may again later; an address the rules refuse will not change
        return Outcome(False, error=f"refused: {exc}", permanent="does not resolve" not in str(exc))
    parts = target.parts
    address = f"[{target.address}]" if ":" in target.address else target.address
    pinned = urlunsplit((parts.scheme, f"{address}:{target.port}", parts.path or "/", parts.query, ""))
    hdrs = {**headers, "Host": parts.netloc, "Content-Type": "application/json", "User-Agent": USER_AGENT}
    extensions = {"sni_hostname": target.host} if parts.scheme == "https" else {}
    secrets = [url, parts.path, parts.query, *headers.values()]
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False) as client, \
                client.stream("POST", pinned, content=body, headers=hdrs, extensions=extensions) as response:
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= MAX_REPLY:
                    break
            reply = redact(data[:2000].decode("utf-8", "replace"), secrets)
            code = response.status_code
    except httpx.TimeoutException as exc:
        return Outcome(False, error=redact(f"timed out after {timeout_s:g} s ({type(exc).__name__})", secrets))
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return Outcome(False, error=redact(f"{type(exc).__name__}: {exc}", secrets))
    if 200 <= code < 300:
        return Outcome(True, code=code, reply=reply)
    if 300 <= code < 400:
        return Outcome(False, code=code, reply=reply, permanent=True,
                       error=f"HTTP {code}: redirects are not followed; give the final URL")
    return Outcome(False, code=code, reply=reply, error=f"HTTP {code}",
                   permanent=not (code in RETRY_STATUS or code >= 500))


def send_mail(settings: Settings, msg: EmailMessage, to: list[str]) -> Outcome:
    started = time.monotonic()
    outcome = _smtp(settings, msg, to)
    outcome.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return outcome


def _smtp(settings: Settings, msg: EmailMessage, to: list[str]) -> Outcome:
    if not settings.smtp_host:
        return Outcome(False, error="the server has no SMTP settings (MOCOLAB_SMTP_HOST)")
    context = ssl.create_default_context(cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None)
    secrets = [settings.smtp_password or ""]
    try:
        smtp: smtplib.SMTP
        if settings.smtp_ssl:
            smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s,
                                    context=context)
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s)
        with smtp:
            smtp.ehlo()
            if not settings.smtp_ssl and settings.smtp_starttls:
                smtp.starttls(context=context)  # raises SMTPNotSupportedError when the server does not offer it
                smtp.ehlo()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            code, reply = smtp.mail(settings.smtp_from)
            if code != 250:
                return Outcome(False, code=code, reply=_text(reply), error=f"sender refused ({code})",
                               permanent=code >= 500)
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in to:
                code, answer = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    refused[rcpt] = (code, _text(answer))
            if len(refused) == len(to):
                code, text = next(iter(refused.values()))
                return Outcome(False, code=code, reply=text, error=f"every recipient refused: {sorted(refused)}",
                               permanent=code >= 500)
            code, answer = smtp.data(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))  # SMTP wants CRLF
            if code != 250:
                return Outcome(False, code=code, reply=_text(answer), error=f"message refused ({code})",
                               permanent=code >= 500)
            note = f"; refused: {sorted(refused)}" if refused else ""
            return Outcome(True, code=code, reply=(_text(answer) + note)[:2000])
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, code=exc.smtp_code, reply=_text(exc.smtp_error),
                       error=redact(f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}", secrets))
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:  # OSError: refused, timed out
        return Outcome(False, error=redact(f"{type(exc).__name__}: {exc}", secrets))


def _text(value: bytes | str) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))[:2000]
