"""Public schemas of users, teams, projects and tokens (never a token hash)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class TeamPublic(BaseModel):
    id: int
    name: str


class UserPublic(BaseModel):
    id: int
    name: str
    email: str | None
    is_admin: bool


class Me(BaseModel):
    user: UserPublic
    teams: list[TeamPublic]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    team: Name | None = Field(None, description="One of your teams; default: your first.")


class ProjectPublic(BaseModel):
    id: int
    name: str
    team: str
    created_at: datetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str
    kind: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked: bool


class TokenCreated(TokenPublic):
    token: str = Field(description="Shown once; only its hash is stored.")
