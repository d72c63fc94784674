"""Public schemas of users, teams, projects and tokens (never a token hash)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

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
    expires_in: int | None = Field(None, ge=60, le=10 * 366 * 86400,
                                   description="Seconds until the token expires (at most ten years); default: never, "
                                   "or when the token you create it with expires, whichever is first.")
    expires_at: AwareDatetime | None = Field(None, description="When the token expires (a future time with its "
                                             "UTC offset); give this or expires_in, not both.")

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        if value is not None and value.year > 9000:
            raise ValueError("expires_at must be before the year 9000")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        return self


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str
    kind: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked: bool
    parent_id: int | None = Field(None, description="The token this one was minted with; revoked with it.")


class TokenCreated(TokenPublic):
    token: str = Field(description="Shown once; only its hash is stored.")


class LoginCode(BaseModel):
    code: str = Field(description="One-time, valid for 10 minutes; only its hash is stored.")
    url: str = Field(description="Open this path on the server in a browser: it exchanges the code for a session.")
    expires_at: datetime


class LoginRequest(BaseModel):
    """The login page's form: a token in a JSON body, so that it stays out of URLs (history, access logs)."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)
