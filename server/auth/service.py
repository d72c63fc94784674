"""Tokens and callers: a token is shown once, stored as its sha256, and resolves to a user and teams."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import Session, col, select

from server.core.db import utcnow
from server.core.errors import BadRequest, Conflict, NotFound, NotPermitted, Unauthorized
from server.models import ApiToken, Membership, Project, Team, User

TOKEN_PREFIX = "mcl_"
SESSION_COOKIE = "mocolab_session"
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


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(session: Session, *, user: User, name: str, kind: str = "api",
                lifetime: timedelta | None = None) -> tuple[ApiToken, str]:
    """-> (row, plaintext). The plaintext is not stored anywhere: show it to the user once."""
    assert user.id is not None
    plain = new_token()
    row = ApiToken(user_id=user.id, name=name, prefix=plain[: len(TOKEN_PREFIX) + 6], token_hash=hash_token(plain),
                   kind=kind, expires_at=utcnow() + lifetime if lifetime else None)
    session.add(row)
    session.flush()
    return row, plain


def resolve(session: Session, token: str | None) -> Caller:
    """The caller a token belongs to; 401 when missing, unknown, revoked or expired."""
    if not token:
        raise Unauthorized()
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    now = utcnow()
    if row is None or row.revoked or (row.expires_at is not None and row.expires_at < now):
        raise Unauthorized("invalid, revoked or expired token")
    user = session.get(User, row.user_id)
    if user is None:
        raise Unauthorized("invalid token")
    teams = session.exec(select(Team.id, Team.name).join(Membership, col(Membership.team_id) == col(Team.id))
                         .where(Membership.user_id == user.id).order_by(col(Team.id))).all()
    return Caller(user=user, team_ids=tuple(t for t, _ in teams if t is not None), token_id=row.id,
                  team_names={t: n for t, n in teams if t is not None})


def needs_touch(session: Session, token_id: int) -> bool:
    row = session.get(ApiToken, token_id)
    return row is not None and (row.last_used_at is None or utcnow() - row.last_used_at > _TOUCH_EVERY)


def touch(session: Session, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = utcnow()
        session.add(row)
        session.commit()


def revoke(session: Session, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.revoked = True
        session.add(row)
        session.commit()


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
