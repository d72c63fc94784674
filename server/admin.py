"""Administration for the `mocolab admin` CLI and the embedded stack: users, teams, projects, tokens.

Every function takes the session first and keyword arguments after it, and commits. Open a session with
`admin_session(settings)` (it migrates the database first):

    with admin_session(Settings()) as s:
        user = create_user(s, name="ada")
        team = create_team(s, name="vision")
        add_member(s, user=user, team=team)
        token = create_token(s, user=user, name="laptop")   # print it once; only its hash is kept
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, col, select

from server.auth.service import get_or_create_project, issue_login_code, issue_token, live_row, revoke
from server.core.config import Settings
from server.core.db import make_engine, migrate, wait_for_db, writer
from server.core.errors import AppError, Conflict, NotFound
from server.models import ApiToken, Membership, Project, Team, User

LOCAL_ADMIN = "admin"
LOCAL_TEAM = "default"


@contextmanager
def admin_session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database)
    try:
        wait_for_db(engine, timeout_s=60)
        migrate(engine)
        with Session(writer(engine), expire_on_commit=False) as session:
            yield session
    finally:
        engine.dispose()


def create_user(session: Session, *, name: str, email: str | None = None, is_admin: bool = False) -> User:
    if session.exec(select(User).where(User.name == name)).first():
        raise Conflict(f"user {name!r} already exists")
    user = User(name=name, email=email, is_admin=is_admin)
    session.add(user)
    session.commit()
    return user


def create_team(session: Session, *, name: str, project: str | None = "default") -> Team:
    """A team, with a first project (None: without)."""
    if session.exec(select(Team).where(Team.name == name)).first():
        raise Conflict(f"team {name!r} already exists")
    team = Team(name=name)
    session.add(team)
    session.flush()
    if project:
        assert team.id is not None
        get_or_create_project(session, team_id=team.id, name=project)
    session.commit()
    return team


def add_member(session: Session, *, user: User, team: Team, role: str = "member") -> Membership:
    assert user.id is not None and team.id is not None
    membership = session.get(Membership, (user.id, team.id))
    if membership is None:
        membership = Membership(user_id=user.id, team_id=team.id, role=role)
    membership.role = role
    session.add(membership)
    session.commit()
    return membership


def remove_member(session: Session, *, user: User, team: Team) -> None:
    membership = session.get(Membership, (user.id, team.id))
    if membership is not None:
        session.delete(membership)
        session.commit()


def create_project(session: Session, *, team: Team, name: str) -> Project:
    assert team.id is not None
    project = get_or_create_project(session, team_id=team.id, name=name)
    session.commit()
    return project


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _lifetime(text: str) -> timedelta:
    """'90d', '12h', '30m', '3600' (seconds) -> a timedelta, within the API's bounds (60 s to 10 years)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not number.isdigit() or not 60 <= int(number) * _UNITS[unit] <= 10 * 366 * 86400:
        raise argparse.ArgumentTypeError(f"expected a duration from 60s to 3660d such as 90d or 12h, got {text!r}")
    return timedelta(seconds=int(number) * _UNITS[unit])


def create_token(session: Session, *, user: User, name: str, lifetime: timedelta | None = None) -> str:
    """A new API token for `user` (expiring after `lifetime`, if given); -> the plaintext, which is not stored
    (show it once)."""
    _row, plain = issue_token(session, user=user, name=name, lifetime=lifetime)
    session.commit()
    return plain


def revoke_token(session: Session, *, prefix: str) -> int:
    """Revoke every token whose displayed prefix starts with `prefix`; -> how many."""
    rows = list(session.exec(select(ApiToken).where(col(ApiToken.prefix).startswith(prefix, autoescape=True),
                                                    col(ApiToken.revoked).is_(False))))
    for row in rows:
        assert row.id is not None
        revoke(session, row.id)  # with its sessions, login codes and the tokens minted with it
    return len(rows)


def create_login_code(session: Session, *, token: str) -> str:
    """A one-time login code (10 minutes) minted with `token`, for the link `/login?code=...`."""
    _row, code = issue_login_code(session, token_id=live_row(session, token).id or 0)
    session.commit()
    return code


def get_user(session: Session, *, name: str) -> User:
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFound(f"user {name!r} not found")
    return user


def get_team(session: Session, *, name: str) -> Team:
    team = session.exec(select(Team).where(Team.name == name)).first()
    if team is None:
        raise NotFound(f"team {name!r} not found")
    return team


@dataclass
class TokenInfo:
    id: int
    user: str
    name: str
    prefix: str
    kind: str
    revoked: bool


def list_users(session: Session) -> list[tuple[User, list[str]]]:
    """Users with the names of their teams."""
    out = []
    for user in session.exec(select(User).order_by(col(User.name))):
        teams = session.exec(select(Team.name).join(Membership, col(Membership.team_id) == col(Team.id))
                             .where(Membership.user_id == user.id).order_by(col(Team.name))).all()
        out.append((user, list(teams)))
    return out


def list_teams(session: Session) -> list[Team]:
    return list(session.exec(select(Team).order_by(col(Team.name))))


def list_tokens(session: Session) -> list[TokenInfo]:
    rows = session.exec(select(ApiToken, User.name).join(User, col(User.id) == col(ApiToken.user_id))
                        .order_by(col(ApiToken.id)))
    return [TokenInfo(t.id or 0, u, t.name, t.prefix, t.kind, t.revoked) for t, u in rows]


def ensure_local_admin(session: Session, *, token_name: str = "local login") -> str:
    """For the embedded stack on loopback: user 'admin' in team 'default' (created once), and a fresh
    token for the login link; -> the token's plaintext."""
    user = session.exec(select(User).where(User.name == LOCAL_ADMIN)).first()
    if user is None:
        user = create_user(session, name=LOCAL_ADMIN, is_admin=True)
    team = session.exec(select(Team).where(Team.name == LOCAL_TEAM)).first()
    if team is None:
        team = create_team(session, name=LOCAL_TEAM)
    add_member(session, user=user, team=team, role="admin")
    return create_token(session, user=user, name=token_name)


# ---------------------------------------------------------------- `mocolab admin ...`
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mocolab admin", description="Users, teams, projects and API tokens "
                                     "(in the database of DATABASE_URL, or the state folder's SQLite file).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create-user", help="a user, optionally in a team (created if new), with a first token")
    p.add_argument("name")
    p.add_argument("--email")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--team", help="add to this team (created when it does not exist)")
    p.add_argument("--token", metavar="NAME", help="also create a token with this name and print it")
    p = sub.add_parser("create-team", help="a team, with a project named 'default'")
    p.add_argument("name")
    p = sub.add_parser("add-member", help="put a user in a team")
    p.add_argument("user")
    p.add_argument("team")
    p.add_argument("--role", default="member", choices=["member", "admin"])
    p = sub.add_parser("remove-member", help="take a user out of a team")
    p.add_argument("user")
    p.add_argument("team")
    p = sub.add_parser("create-project", help="a project in a team")
    p.add_argument("team")
    p.add_argument("name")
    p = sub.add_parser("create-token", help="a new API token for a user, printed once")
    p.add_argument("user")
    p.add_argument("--name", default="cli")
    p.add_argument("--expires-in", type=_lifetime, default=None, metavar="N[smhd]",
                   help="the token stops working after this long (e.g. 90d, 12h; at least 60 s); default: never")
    p = sub.add_parser("revoke-token", help="revoke tokens by the prefix shown in list-tokens")
    p.add_argument("prefix")
    sub.add_parser("list-users")
    sub.add_parser("list-teams")
    sub.add_parser("list-tokens")
    sub.add_parser("login-link", help="user 'admin' in team 'default', and a login URL for this machine")
    return parser


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """`mocolab admin ARGS`; -> the exit status. Errors print one line, never a traceback."""
    args = _parser().parse_args(argv)
    settings = settings or Settings()
    out = sys.stdout.write
    try:
        with admin_session(settings) as s:
            if args.command == "create-user":
                user = create_user(s, name=args.name, email=args.email, is_admin=args.admin)
                if args.team:
                    team = s.exec(select(Team).where(Team.name == args.team)).first() or create_team(s, name=args.team)
                    add_member(s, user=user, team=team)
                out(f"user {user.name} created" + (f" in team {args.team}" if args.team else "") + "\n")
                if args.token:
                    out(f"token: {create_token(s, user=user, name=args.token)}\n")
            elif args.command == "create-team":
                out(f"team {create_team(s, name=args.name).name} created (with project 'default')\n")
            elif args.command == "add-member":
                add_member(s, user=get_user(s, name=args.user), team=get_team(s, name=args.team), role=args.role)
                out(f"{args.user} is a {args.role} of {args.team}\n")
            elif args.command == "remove-member":
                remove_member(s, user=get_user(s, name=args.user), team=get_team(s, name=args.team))
                out(f"{args.user} is no longer in {args.team}\n")
            elif args.command == "create-project":
                out(f"project {create_project(s, team=get_team(s, name=args.team), name=args.name).name} created\n")
            elif args.command == "create-token":
                out(create_token(s, user=get_user(s, name=args.user), name=args.name, lifetime=args.expires_in) + "\n")
            elif args.command == "revoke-token":
                out(f"{revoke_token(s, prefix=args.prefix)} token(s) revoked\n")
            elif args.command == "list-users":
                for user, teams in list_users(s):
                    out(f"{user.name}\t{'admin' if user.is_admin else ''}\t{','.join(teams)}\n")
            elif args.command == "list-teams":
                for team in list_teams(s):
                    out(f"{team.name}\n")
            elif args.command == "list-tokens":
                for t in list_tokens(s):
                    out(f"{t.prefix}...\t{t.user}\t{t.name}\t{t.kind}\t{'revoked' if t.revoked else 'active'}\n")
            elif args.command == "login-link":
                host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
                code = create_login_code(s, token=ensure_local_admin(s))
                out(f"http://{host}:{settings.port}/login?code={code}\n")
    except AppError as exc:
        sys.stderr.write(f"mocolab admin: {exc.detail}\n")
        return 1
    return 0
