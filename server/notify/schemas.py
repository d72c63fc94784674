"""Request and response schemas of the notification channels API (the tables are `server.models.Notify*`).

A channel's secrets (its URL, extra headers, the webhook signing secret) are accepted by POST and PATCH and
returned by nothing: the public view has `target_hint` (the masked URL) and `has_secret`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

ChannelKind = Literal["webhook", "slack", "email"]
Severity = Literal["warning", "critical"]
RunEnd = Literal["succeeded", "failed", "lost"]
DeliveryStatus = Literal["pending", "sent", "failed"]
SEVERITIES: tuple[Severity, ...] = ("warning", "critical")
RUN_ENDS: tuple[RunEnd, ...] = ("succeeded", "failed", "lost")
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")
# Set by the server for every webhook call; a channel's headers may not replace them.
RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding", "connection",
                              "user-agent", "x-mocolab-signature", "x-mocolab-delivery", "x-mocolab-event"})
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$")
AlertKindName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rules(_Body):
    alert_kinds: list[AlertKindName] | None = Field(None, max_length=32, description="The alert kinds sent; "
                                                    "null = all (non_finite, loss_spike, grad_spike, knn_dip, "
                                                    "spike_then_dip, update_spike, entropy_collapse, rank_collapse, "
                                                    "stall).")
    severities: list[Severity] = Field(default_factory=lambda: list(SEVERITIES), max_length=2,
                                       description="The alert severities sent.")
    run_ends: list[RunEnd] = Field(default_factory=lambda: list(RUN_ENDS), max_length=3,
                                   description="Which ends of a run are sent (lost: no heartbeat; it is re-queued "
                                   "or failed).")
    evaluations: bool = Field(True, description="Send each finished evaluation's result.")
    studies: bool = Field(True, description="Send a study's end (every run ended).")


class _Secrets(_Body):
    url: Url | None = Field(None, description="webhook and slack: where to POST (write-only: never returned). "
                            "http(s) only; loopback and private addresses only where the server allows them.")
    headers: dict[str, str] | None = Field(None, max_length=8, description="webhook: extra request headers, "
                                           "e.g. Authorization (write-only).")
    signing_secret: str | None = Field(None, min_length=8, max_length=256, description="webhook: when set, each "
                                       "call carries X-Mocolab-Signature: sha256=<HMAC-SHA256 of the body> "
                                       "(write-only).")
    emails: list[Email] | None = Field(None, min_length=1, max_length=20, description="email: the recipients.")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, v in (value or {}).items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"header name {name[:64]!r}: letters, digits and '-' only")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the server")
            if not HEADER_VALUE.match(v):
                raise ValueError(f"header {name!r}: printable ASCII, at most 1024 characters")
        return value

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str] | None) -> list[str] | None:
        for address in value or []:
            if not EMAIL.match(address):
                raise ValueError(f"{address[:254]!r} is not an e-mail address")
        return value


class ChannelCreate(_Secrets):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$", description="Unique in the team.")
    kind: ChannelKind
    team: str | None = Field(None, max_length=64, description="One of your teams; default: your first.")
    project: str | None = Field(None, min_length=1, max_length=64, description="Only this project's runs; "
                                "null = every project of the team.")
    enabled: bool = True
    rules: Rules = Field(default_factory=Rules)
    cooldown_s: int = Field(1800, ge=0, le=7 * 86400, description="One message per run and kind within this "
                            "long; more are counted on it (suppressed). 0 = every incident.")


class ChannelUpdate(_Secrets):
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
    project: str | None = Field(None, min_length=1, max_length=64, description="Only this project's runs from "
                                "now on (all_projects: true widens it to the team again).")
    all_projects: bool | None = Field(None, description="true: the channel covers every project again.")
    enabled: bool | None = None
    rules: Rules | None = None
    cooldown_s: int | None = Field(None, ge=0, le=7 * 86400)


class ChannelPublic(BaseModel):
    id: int
    team: str
    project: str | None
    name: str
    kind: ChannelKind
    enabled: bool
    target_hint: str = Field(description="The masked URL (scheme, host, last characters), or the e-mail "
                             "addresses.")
    has_secret: bool = Field(description="A URL (and headers) is stored; it is never returned.")
    has_signing_secret: bool = False
    rules: Rules
    cooldown_s: int
    created_at: datetime
    updated_at: datetime


class AttemptPublic(BaseModel):
    time: datetime
    ok: bool
    code: int | None = Field(description="The HTTP status, or the SMTP reply code.")
    reply: str | None = Field(description="The start of the receiver's answer.")
    error: str | None
    duration_ms: float


class DeliveryPublic(BaseModel):
    id: int
    channel_id: int
    kind: str = Field(description="alert | run_end | evaluation | study | test")
    title: str
    run_id: str | None
    step: int | None
    status: DeliveryStatus
    attempt_count: int
    suppressed: int = Field(description="Further incidents within the cooldown that this message covers.")
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When it is tried again (pending only).")
    sent_at: datetime | None
    last_error: str | None
    attempts: list[AttemptPublic] = Field(description="Each try, oldest first.")
