"""Who am I, my teams and projects, my tokens (/api/v1), and the browser login (/login, /logout)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlmodel import Session, col, select

from server.auth import service
from server.auth.schemas import (
    LoginCode,
    LoginRequest,
    Me,
    ProjectCreate,
    ProjectPublic,
    TeamPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserPublic,
)
from server.core.config import Settings
from server.core.db import writer
from server.core.errors import ERROR_RESPONSES, NotFound, Unauthorized
from server.deps import CallerDep, SessionDep, SettingsDep, get_engine
from server.models import ApiToken

router = APIRouter(tags=["auth"], responses=ERROR_RESPONSES)
login_router = APIRouter(tags=["auth"], include_in_schema=False)


@router.get("/me", response_model=Me)
def read_me(caller: CallerDep) -> Me:
    user = caller.user
    assert user.id is not None
    return Me(user=UserPublic(id=user.id, name=user.name, email=user.email, is_admin=user.is_admin),
              teams=[TeamPublic(id=t, name=caller.team_names.get(t, "")) for t in caller.team_ids])


@router.get("/projects", response_model=list[ProjectPublic])
def read_projects(session: SessionDep, caller: CallerDep) -> list[ProjectPublic]:
    return [ProjectPublic(id=p.id or 0, name=p.name, team=team, created_at=p.created_at)
            for p, team in service.projects_of(session, caller)]


@router.post("/projects", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, session: SessionDep, caller: CallerDep) -> ProjectPublic:
    project, team = service.create_project(session, caller=caller, team=body.team, name=body.name)
    return ProjectPublic(id=project.id or 0, name=project.name, team=team, created_at=project.created_at)


@router.get("/tokens", response_model=list[TokenPublic])
def read_tokens(session: SessionDep, caller: CallerDep) -> list[TokenPublic]:
    rows = session.exec(select(ApiToken).where(ApiToken.user_id == caller.user.id).order_by(col(ApiToken.id)))
    return [TokenPublic.model_validate(t, from_attributes=True) for t in rows]


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, session: SessionDep, caller: CallerDep) -> TokenCreated:
    lifetime = timedelta(seconds=body.expires_in) if body.expires_in else None
    row, plain = service.issue_token(session, user=caller.user, name=body.name, lifetime=lifetime,
                                     expires_at=body.expires_at, parent_id=caller.token_id)
    session.commit()
    return TokenCreated(**TokenPublic.model_validate(row, from_attributes=True).model_dump(), token=plain)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**31)], session: SessionDep, caller: CallerDep) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != caller.user.id:
        raise NotFound("token not found")
    service.revoke(session, token_id)  # and every session, login code and token minted with it


@router.post("/login-codes", status_code=201, response_model=LoginCode)
def create_login_code(session: SessionDep, caller: CallerDep) -> LoginCode:
    """A one-time login link for a browser (10 minutes), minted with the calling token."""
    if caller.token_id is None:
        raise Unauthorized()
    row, code = service.issue_login_code(session, token_id=caller.token_id)
    session.commit()
    assert row.expires_at is not None
    return LoginCode(code=code, url=f"/login?code={quote(code)}", expires_at=row.expires_at)


@login_router.get("/login")
def login(request: Request, settings: SettingsDep, code: Annotated[str | None, Query(max_length=200)] = None,
          token: Annotated[str | None, Query(max_length=200)] = None,
          next: Annotated[str, Query(max_length=500)] = "/") -> Response:
    """Exchange a one-time login code (the link `mocolab up` prints) or a token (older login pages' form; the page
    now POSTs it) for an HttpOnly session cookie, then go to the UI. A bad one sends a browser to the login page
    with the reason; other clients get 401. Neither appears in the access log (server.core.logs)."""
    with Session(writer(get_engine(request))) as session:
        try:
            parent = service.redeem_login_code(session, code) if code else service.live_row(session, token)
            caller = service.caller_of(session, parent)
        except Unauthorized:
            session.commit()  # a code is used up even when its token is not valid any more
            if "text/html" in request.headers.get("accept", ""):
                return RedirectResponse(f"/login-page?error=invalid-{'code' if code else 'token'}", status_code=303)
            raise
        session_token = _open_session(session, settings, parent, caller)
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    return _with_cookie(RedirectResponse(target, status_code=303), request, settings, session_token)


@login_router.post("/login", status_code=204)
def login_with_token(body: LoginRequest, request: Request, settings: SettingsDep) -> Response:
    """The login page's form: the pasted token in a JSON body (never in a URL, so never in the browser's history)
    for an HttpOnly session cookie; 401 if it is not a live API token. A JSON body is no simple request, so a
    cross-site page cannot send one (no preflight is answered); with a cookie, SameOrigin checks it too."""
    with Session(writer(get_engine(request))) as session:
        parent = service.live_row(session, body.token)
        session_token = _open_session(session, settings, parent, service.caller_of(session, parent))
    return _with_cookie(Response(status_code=204), request, settings, session_token)


def _open_session(session: Session, settings: Settings, parent: ApiToken, caller: service.Caller) -> str:
    """A browser session token minted with `parent` (revoked with it); -> the plain token for the cookie."""
    _row, session_token = service.issue_token(session, user=caller.user, name="browser session", kind="session",
                                              lifetime=timedelta(days=settings.session_days), parent_id=parent.id)
    session.commit()
    return session_token


def _with_cookie(response: Response, request: Request, settings: Settings, session_token: str) -> Response:
    response.set_cookie(service.SESSION_COOKIE, session_token, max_age=settings.session_days * 86400, httponly=True,
                        samesite="lax", secure=settings.cookie_secure or request.url.scheme == "https", path="/")
    return response


@login_router.post("/logout")
def logout(request: Request, session: SessionDep) -> RedirectResponse:
    cookie = request.cookies.get(service.SESSION_COOKIE)
    if cookie:
        try:
            caller = service.resolve(session, cookie)
            if caller.token_id is not None:
                service.revoke(session, caller.token_id)
        except Unauthorized:
            pass
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(service.SESSION_COOKIE, path="/")
    return response
