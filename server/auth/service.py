"""Tokens and callers: a token is shown once, stored as its sha256, and resolves to a user and teams."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from server.core.db import utcnow
from server.core.errors import BadRequest, Conflict, NotFound, NotPermitted, Unauthorized
from server.models import ApiToken, Membership, Project, Team, User

TOKEN_PREFIX = "mcl_"
LOGIN_CODE_PREFIX = "mlc_"
SESSION_COOKIE = "mocolab_session"
LOGIN_CODE_LIFETIME = timedelta(minutes=10)
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    user: User
    team_ids: tuple[int, ...]
    token_id: int | None = None
    team_names: dict[int, str] = field(default_factory=dict)

    def team_id_for(self, name: str | None) -> int:
        """The team a new run or project goes to: the named one, else the caller's first."""
        if not self.team_ids:
            raise NotPermitted("you are not a member of any team; ask an admin to add you")
        if name is None:
            return self.team_ids[0]
        for tid, tname in self.team_names.items():
            if tname == name:
                return tid
        raise NotFound(f"team {name!r} not found among yours")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def issue_token(session: Session, *, user: User, name: str, kind: str = "api", lifetime: timedelta | None = None,
                expires_at: datetime | None = None, parent_id: int | None = None) -> tuple[ApiToken, str]:
    """-> (row, plaintext). The plaintext is not stored anywhere: show it to the user once. A token minted with
    another (`parent_id`) never outlives it, and is revoked with it."""
    assert user.id is not None
    plain = new_token(LOGIN_CODE_PREFIX if kind == "login" else TOKEN_PREFIX)
    ends = [t for t in (expires_at, utcnow() + lifetime if lifetime else None) if t is not None]
    parent = session.get(ApiToken, parent_id) if parent_id is not None else None
    if parent is not None and parent.expires_at is not None:
        ends.append(parent.expires_at)
    row = ApiToken(user_id=user.id, name=name, prefix=plain[: len(TOKEN_PREFIX) + 6], token_hash=hash_token(plain),
                   kind=kind, expires_at=min(ends) if ends else None, parent_id=parent_id)
    session.add(row)
    session.flush()
    return row, plain


def live_row(session: Session, token: str | None, kind: str | None = None) -> ApiToken:
    """The row of a token that is neither revoked nor expired; a login code only when asked for (`kind`)."""
    if not token:
        raise Unauthorized()
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if (row is None or row.revoked or (row.expires_at is not None and row.expires_at < utcnow())
            or (row.kind == "login") != (kind == "login")):
        raise Unauthorized("invalid, revoked or expired token")
    return row


def resolve(session: Session, token: str | None) -> Caller:
    """The caller a token belongs to; 401 when missing, unknown, revoked or expired (a login code is no token:
    it only opens a browser session, once)."""
    return caller_of(session, live_row(session, token))


def caller_of(session: Session, row: ApiToken) -> Caller:
    """The caller a live token row stands for."""
    user = session.get(User, row.user_id)
    if user is None:
        raise Unauthorized("invalid token")
    teams = session.exec(select(Team.id, Team.name).join(Membership, col(Membership.team_id) == col(Team.id))
                         .where(Membership.user_id == user.id).order_by(col(Team.id))).all()
    return Caller(user=user, team_ids=tuple(t for t, _ in teams if t is not None), token_id=row.id,
                  team_names={t: n for t, n in teams if t is not None})


def issue_login_code(session: Session, *, token_id: int) -> tuple[ApiToken, str]:
    """A one-time code for the login link (10 minutes), minted with the token `token_id`: the link carries this
    code instead of the token itself, so a leaked link (a log, a browser history) is worthless once used."""
    parent = session.get(ApiToken, token_id)
    if parent is None or parent.revoked or (parent.expires_at is not None and parent.expires_at < utcnow()):
        raise Unauthorized("invalid, revoked or expired token")
    user = session.get(User, parent.user_id)
    if user is None:
        raise Unauthorized("invalid token")
    return issue_token(session, user=user, name="login code", kind="login", lifetime=LOGIN_CODE_LIFETIME,
                       parent_id=token_id)


def redeem_login_code(session: Session, code: str) -> ApiToken:
    """Consume a login code (the first use wins, also between concurrent requests) -> the token it was minted
    with; 401 when unknown, used, expired, or its token is revoked or expired."""
    bad = Unauthorized("invalid, used or expired login code")
    try:
        row = live_row(session, code, kind="login")
    except Unauthorized:
        raise bad from None
    if row.parent_id is None:
        raise bad
    used = session.execute(update(ApiToken).where(col(ApiToken.id) == row.id, col(ApiToken.revoked).is_(False))
                           .values(revoked=True, last_used_at=utcnow()))
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise bad
    parent = session.get(ApiToken, row.parent_id)
    if parent is None or parent.revoked or (parent.expires_at is not None and parent.expires_at < utcnow()):
        raise bad
    return parent


def needs_touch(session: Session, token_id: int) -> bool:
    row = session.get(ApiToken, token_id)
    return row is not None and (row.last_used_at is None or utcnow() - row.last_used_at > _TOUCH_EVERY)


def touch(session: Session, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = utcnow()
        session.add(row)
        session.commit()


def revoke(session: Session, token_id: int) -> int:
    """Revoke a token and every token minted with it, transitively (its browser sessions, login codes and child
    tokens); -> how many were newly revoked."""
    ids = descendants(session, token_id)
    result = session.execute(update(ApiToken).where(col(ApiToken.id).in_(ids), col(ApiToken.revoked).is_(False))
                             .values(revoked=True))
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def descendants(session: Session, token_id: int) -> list[int]:
    """`token_id` and the ids of the tokens minted with it, their children and so on (breadth first)."""
    found, frontier = [token_id], [token_id]
    while frontier:
        frontier = [i for i in session.exec(select(ApiToken.id).where(col(ApiToken.parent_id).in_(frontier)))
                    if i is not None and i not in found]
        found += frontier
    return found


# ---------------------------------------------------------------- teams and projects
def projects_of(session: Session, caller: Caller) -> list[tuple[Project, str]]:
    rows = session.exec(select(Project, Team.name).join(Team, col(Team.id) == col(Project.team_id))
                        .where(col(Project.team_id).in_(caller.team_ids)).order_by(col(Project.id))).all()
    return [(p, t) for p, t in rows]


def get_or_create_project(session: Session, *, team_id: int, name: str) -> Project:
    project = session.exec(select(Project).where(Project.team_id == team_id, Project.name == name)).first()
    if project is None:
        project = Project(team_id=team_id, name=name)
        session.add(project)
        session.flush()
    return project


def create_project(session: Session, *, caller: Caller, team: str | None, name: str) -> tuple[Project, str]:
    team_id = caller.team_id_for(team)
    if session.exec(select(Project).where(Project.team_id == team_id, Project.name == name)).first():
        raise Conflict(f"project {name!r} already exists")
    if not name.strip():
        raise BadRequest("a project needs a name")
    project = get_or_create_project(session, team_id=team_id, name=name)
    session.commit()
    return project, caller.team_names.get(team_id, "")
