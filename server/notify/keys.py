"""The server's key: it seals the channels' secrets in the database (Fernet: AES-128-CBC with an HMAC-SHA256,
from `cryptography`) and signs the chart links Slack fetches without a login (HMAC-SHA256).

The key is MOCOLAB_SECRET_KEY when set, else a random one written once to <state>/secret.key (mode 0600), which
is enough for one server; servers that share a database must share the key. Sealing and signing use keys
derived from it for each purpose, so a chart signature says nothing about the sealing key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from server.core.config import Settings

_lock = threading.Lock()
_cache: dict[str, bytes] = {}


class SecretUnreadable(ValueError):
    """A sealed secret this server's key does not open (the key changed)."""


def server_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    path = (settings.state_dir / "secret.key").resolve()
    with _lock:
        if str(path) in _cache:
            return _cache[str(path)]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two processes starting at once keep one key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        key = path.read_text().strip().encode()
        if not key:
            raise RuntimeError(f"{path} is empty: remove it or set MOCOLAB_SECRET_KEY")
        _cache[str(path)] = key
        return key


def _derived(settings: Settings, purpose: str) -> bytes:
    return hmac.new(server_key(settings), purpose.encode(), hashlib.sha256).digest()


def seal(settings: Settings, value: dict[str, Any]) -> str:
    fernet = Fernet(base64.urlsafe_b64encode(_derived(settings, "mocolab/notify/seal")))
    return fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()


def unseal(settings: Settings, token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    fernet = Fernet(base64.urlsafe_b64encode(_derived(settings, "mocolab/notify/seal")))
    try:
        value = json.loads(fernet.decrypt(token.encode()))
    except (InvalidToken, ValueError):
        raise SecretUnreadable("the channel's secret cannot be opened with this server's key (was "
                               "MOCOLAB_SECRET_KEY changed?): set its url again") from None
    return value if isinstance(value, dict) else {}


def chart_sig(settings: Settings, delivery_id: int) -> str:
    """The signature of a delivery's chart link: 128 bits of an HMAC, unguessable without the key."""
    mac = hmac.new(_derived(settings, "mocolab/notify/chart"), f"chart:{delivery_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def chart_sig_ok(settings: Settings, delivery_id: int, sig: str) -> bool:
    return hmac.compare_digest(chart_sig(settings, delivery_id).encode(), sig.encode("utf-8", "replace"))


def body_signature(secret: str, body: bytes) -> str:
    """X-Mocolab-Signature of a webhook body: sha256=<hex HMAC-SHA256 of the raw body with the channel's
    signing secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
