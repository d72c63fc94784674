"""What can be done to a team's notification channels: create, list, show, change, delete, send a test, read
the delivery log; and the chart a message links to.

A channel is its team's: another team's is a 404. Bad input is a 422 at the field (a URL the rules refuse at
body.url, an e-mail channel on a server without SMTP at body.kind, a taken name at body.name). Secrets are
sealed with the server's key before they are stored (`keys.seal`) and never put in a response.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from server.auth.service import Caller, get_or_create_project
from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import NotFound, SpecInvalid
from server.models import NotifyAttempt, NotifyChannel, NotifyDelivery, Project, Team
from server.notify import chart, keys, urls
from server.notify.delivery import Deliverer
from server.notify.outbox import DEFAULT_RULES, NotifyEvent, file
from server.notify.schemas import (
    AttemptPublic,
    ChannelCreate,
    ChannelPublic,
    ChannelUpdate,
    DeliveryPublic,
    Rules,
    _Secrets,
)

BODY = ("body",)


# The engine's alert kinds (mocov3_core.monitor.detectors.AlertKind, which imports torch, so not read from
# there) and the server's own (stall): the names a channel's rules may ask for.
ALERT_KINDS = frozenset({"non_finite", "loss_spike", "grad_spike", "knn_dip", "spike_then_dip", "update_spike",
                         "entropy_collapse", "rank_collapse", "stall"})


def _check_rules(rules: Rules, root: str = "rules") -> dict[str, object]:
    known = ALERT_KINDS
    for i, kind in enumerate(rules.alert_kinds or []):
        if kind not in known:
            error = SpecInvalid(f"{root}.alert_kinds", f"unknown alert kind {kind!r}; known: "
                                f"{', '.join(sorted(known))}", root=BODY)
            error.detail[0]["loc"].append(i)  # the item's index, as a number (as pydantic's own 422s have it)
            raise error
    return rules.model_dump()


def _check_url(settings: Settings, url: str) -> str:
    try:
        urls.resolve(url, urls.allowed_nets(settings.notify_allow_nets))
    except urls.UnsafeUrl as exc:
        raise SpecInvalid("url", str(exc), root=BODY) from None
    return url


def _secrets(settings: Settings, kind: str, body: _Secrets, stored: dict[str, object],
             given: set[str]) -> tuple[dict[str, object], list[str]]:
    """The channel's secret and recipients after this request, checked against its kind."""
    secret = dict(stored)
    emails: list[str] = []
    if kind == "email":
        for field in ("url", "headers", "signing_secret"):
            if field in given and getattr(body, field) is not None:
                raise SpecInvalid(field, "an e-mail channel takes emails, not a URL", root=BODY)
        if not settings.smtp_host:
            raise SpecInvalid("kind", "e-mail channels need the server's SMTP settings (MOCOLAB_SMTP_HOST)",
                              root=BODY)
        return {}, list(body.emails or [])
    if "emails" in given and body.emails is not None:
        raise SpecInvalid("emails", f"a {kind} channel takes a url, not emails", root=BODY)
    if kind == "slack":
        for field in ("headers", "signing_secret"):
            if field in given and getattr(body, field) is not None:
                raise SpecInvalid(field, "only a webhook channel takes headers and a signing secret", root=BODY)
    if "url" in given:
        if body.url is None:
            raise SpecInvalid("url", "a channel needs its url", root=BODY)
        secret["url"] = _check_url(settings, body.url)
    if "headers" in given:
        secret["headers"] = dict(body.headers or {})
    if "signing_secret" in given:
        secret["signing_secret"] = body.signing_secret
    if not secret.get("url"):
        raise SpecInvalid("url", f"a {kind} channel needs a url", root=BODY)
    return {k: v for k, v in secret.items() if v}, emails


def _hint(kind: str, secret: dict[str, object], emails: list[str]) -> str:
    if kind == "email":
        return ", ".join(emails)[:2000]
    return urls.mask(str(secret.get("url") or ""))


# ---------------------------------------------------------------- channels
def get(session: Session, *, caller: Caller, channel_id: int) -> NotifyChannel:
    row = session.get(NotifyChannel, channel_id)
    if row is None or row.team_id not in caller.team_ids:
        raise NotFound(f"channel {channel_id} not found")
    return row


def list_channels(session: Session, *, settings: Settings, caller: Caller, team: str | None) -> list[ChannelPublic]:
    team_id = caller.team_id_for(team)
    rows = session.exec(select(NotifyChannel).where(NotifyChannel.team_id == team_id)
                        .order_by(col(NotifyChannel.name))).all()
    return to_public(session, settings, rows)


def create(session: Session, *, settings: Settings, caller: Caller, body: ChannelCreate) -> ChannelPublic:
    team_id = caller.team_id_for(body.team)
    given = body.model_fields_set
    rules = _check_rules(body.rules)
    secret, emails = _secrets(settings, body.kind, body, {}, given)
    if body.kind == "email" and not emails:
        raise SpecInvalid("emails", "an e-mail channel needs at least one address", root=BODY)
    project = get_or_create_project(session, team_id=team_id, name=body.project) if body.project else None
    row = NotifyChannel(team_id=team_id, project_id=project.id if project else None, name=body.name,
                        kind=body.kind, enabled=body.enabled, target_hint=_hint(body.kind, secret, emails),
                        secret=keys.seal(settings, secret) if secret else None, emails=emails, rules=rules,
                        cooldown_s=body.cooldown_s, created_by=caller.user.id)
    _save(session, row, body.name)
    return to_public(session, settings, [row])[0]


def update(session: Session, *, settings: Settings, caller: Caller, channel_id: int,
           body: ChannelUpdate) -> ChannelPublic:
    row = get(session, caller=caller, channel_id=channel_id)
    given = body.model_fields_set
    if {"url", "headers", "signing_secret", "emails"} & given:
        stored: dict[str, object] = {}
        if row.kind != "email" and row.secret:
            try:
                stored = keys.unseal(settings, row.secret)
            except keys.SecretUnreadable:  # a new URL replaces what the key no longer opens
                stored = {}
        secret, emails = _secrets(settings, row.kind, body, stored, given)
        if row.kind == "email":
            if "emails" in given:
                if not emails:
                    raise SpecInvalid("emails", "an e-mail channel needs at least one address", root=BODY)
                row.emails = emails
        else:
            row.secret = keys.seal(settings, secret)
        row.target_hint = _hint(row.kind, secret, row.emails)
    if body.name is not None:
        row.name = body.name
    if body.enabled is not None:
        row.enabled = body.enabled
    if body.rules is not None:
        row.rules = _check_rules(body.rules)
    if body.cooldown_s is not None:
        row.cooldown_s = body.cooldown_s
    if body.all_projects:
        if body.project is not None:
            raise SpecInvalid("all_projects", "give project or all_projects, not both", root=BODY)
        row.project_id = None
    elif body.project is not None:
        row.project_id = get_or_create_project(session, team_id=row.team_id, name=body.project).id
    row.updated_at = utcnow()
    _save(session, row, row.name)
    return to_public(session, settings, [row])[0]


def delete(session: Session, *, caller: Caller, channel_id: int) -> None:
    row = get(session, caller=caller, channel_id=channel_id)
    session.delete(row)
    session.commit()


def _save(session: Session, row: NotifyChannel, name: str) -> None:
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise SpecInvalid("name", f"{name!r} is taken in this team", root=BODY) from None
    session.refresh(row)


def to_public(session: Session, settings: Settings, rows: Iterable[NotifyChannel]) -> list[ChannelPublic]:
    teams: dict[int, str] = {}
    out = []
    for row in rows:
        if row.team_id not in teams:
            team = session.get(Team, row.team_id)
            teams[row.team_id] = team.name if team else str(row.team_id)
        project = session.get(Project, row.project_id) if row.project_id else None
        has_signing = False
        if row.kind == "webhook" and row.secret:
            try:
                has_signing = bool(keys.unseal(settings, row.secret).get("signing_secret"))
            except keys.SecretUnreadable:
                has_signing = False
        assert row.id is not None
        out.append(ChannelPublic(
            id=row.id, team=teams[row.team_id], project=project.name if project else None, name=row.name,
            kind=row.kind, enabled=row.enabled, target_hint=row.target_hint,
            has_secret=bool(row.secret) or bool(row.emails), has_signing_secret=has_signing,
            rules=Rules.model_validate({**DEFAULT_RULES, **(row.rules or {})}), cooldown_s=row.cooldown_s,
            created_at=row.created_at, updated_at=row.updated_at))
    return out


# ---------------------------------------------------------------- deliveries
def deliveries(session: Session, *, caller: Caller, channel_id: int, limit: int,
               before: int | None) -> list[DeliveryPublic]:
    get(session, caller=caller, channel_id=channel_id)
    query = select(NotifyDelivery).where(NotifyDelivery.channel_id == channel_id)
    if before is not None:
        query = query.where(col(NotifyDelivery.id) < before)
    rows = session.exec(query.order_by(col(NotifyDelivery.id).desc()).limit(limit)).all()
    return delivery_public(session, rows)


def delivery_public(session: Session, rows: Iterable[NotifyDelivery]) -> list[DeliveryPublic]:
    rows = list(rows)
    ids = [r.id for r in rows]
    attempts: dict[int, list[AttemptPublic]] = {i: [] for i in ids if i is not None}
    if ids:
        for a in session.exec(select(NotifyAttempt).where(col(NotifyAttempt.delivery_id).in_(ids))
                              .order_by(col(NotifyAttempt.id))):
            attempts[a.delivery_id].append(AttemptPublic(time=a.time, ok=a.ok, code=a.code, reply=a.reply,
                                                         error=a.error, duration_ms=a.duration_ms))
    out = []
    for r in rows:
        assert r.id is not None
        payload = r.payload or {}
        out.append(DeliveryPublic(
            id=r.id, channel_id=r.channel_id, kind=r.kind, title=str(payload.get("title", "")), run_id=r.run_id,
            step=payload.get("step") if isinstance(payload.get("step"), int) else None,
            status=r.status, attempt_count=r.attempts, suppressed=r.suppressed,
            created_at=r.created_at, next_attempt_at=r.next_attempt_at if r.status == "pending" else None,
            sent_at=r.sent_at, last_error=r.last_error, attempts=attempts.get(r.id, [])))
    return out


def send_test(session: Session, *, caller: Caller, deliverer: Deliverer, channel_id: int) -> DeliveryPublic:
    """A test message through the real path (the outbox row, the transport, the attempt log), sent now and
    tried once: the answer is the delivery with its attempt."""
    row = get(session, caller=caller, channel_id=channel_id)
    event = NotifyEvent(kind="test", title=f"Test message for channel {row.name}", incident="test",
                        summary=f"{caller.user.name} sent a test from mocolab: this channel works.",
                        details={"by": caller.user.name})
    delivery_id = file(session, row, event, cooldown_s=0)
    claimed = session.get(NotifyDelivery, delivery_id)
    assert claimed is not None
    claimed.next_attempt_at = utcnow() + timedelta(seconds=deliverer.lease_s)  # claimed: the loop leaves it to us
    session.add(claimed)
    session.commit()
    deliverer.deliver(delivery_id, retry=False)
    session.expire_all()
    fresh = session.get(NotifyDelivery, delivery_id)
    assert fresh is not None
    return delivery_public(session, [fresh])[0]


def chart_png(session: Session, *, settings: Settings, delivery_id: int, sig: str) -> bytes:
    """The chart of a delivery, for the signed link in its message (no login: the signature is the key)."""
    if not keys.chart_sig_ok(settings, delivery_id, sig):
        raise NotFound("chart not found")
    row = session.get(NotifyDelivery, delivery_id)
    if row is None:
        raise NotFound("chart not found")
    event = NotifyEvent.from_payload(row.payload or {})
    png = chart.for_delivery(session, event.run_id, event.details, event.step)
    if png is None:
        raise NotFound("this message has no chart")
    return png
