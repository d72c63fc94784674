"""Server settings: one pydantic-settings class read from the environment (and `.env`).

DATABASE_URL and REDIS_URL keep their conventional names; everything else is MOCOLAB_*. Derived values
(the SQLite default under the state folder, whether the bind is loopback) are properties.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore", populate_by_name=True)

    state_dir: Path = Field(Path(".mocolab"), validation_alias=AliasChoices("MOCOLAB_STATE", "state_dir"),
                            description="Local state: the SQLite file, the embedded Redis, the default storage.")
    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL", "database_url"),
                                     description="SQLAlchemy URL; None = sqlite:///<state>/mocolab.db.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    storage: Path | None = Field(None, validation_alias=AliasChoices("MOCOLAB_STORAGE", "storage"),
                                 description="Root of run directories and checkpoints; None = <state>/storage.")
    dataset_roots: str = Field(
        "", validation_alias=AliasChoices("MOCOLAB_DATASET_ROOTS", "dataset_roots"),
        description="Folders a spec's data.root (and a registered dataset's path) may point into, separated by ':' "
        "or ','; empty = /usr/share/datasets. The storage's datasets/ folder (the teams' packed copies) is always "
        "allowed, each team's own folder only to that team.")
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("MOCOLAB_HOST", "host"),
                      description="Bind address. Loopback allows the local login link; any other address "
                      "answers nothing without a token.")
    port: int = Field(8000, validation_alias=AliasChoices("MOCOLAB_PORT", "port"))
    web_dist: Path = Field(REPO_ROOT / "web" / "dist", validation_alias=AliasChoices("MOCOLAB_WEB_DIST", "web_dist"))
    background: bool = Field(True, validation_alias=AliasChoices("MOCOLAB_BACKGROUND", "background"),
                             description="Run the ingest loop and the watchdog inside the app.")
    ingest_consumer: str = Field(default_factory=socket.gethostname,
                                 validation_alias=AliasChoices("MOCOLAB_INGEST_CONSUMER", "ingest_consumer"),
                                 description="Consumer name in the ingest group; stable across restarts so "
                                 "a restarted server re-reads its own unacknowledged entries first.")
    ingest_batch: int = Field(200, ge=1, description="Stream entries read per batch (each holds many events).")
    ingest_block_ms: int = Field(500, ge=1, description="Longest wait of one XREADGROUP.")
    ingest_claim_idle_ms: int = Field(30_000, ge=1, description="Pending entries idle this long are claimed "
                                      "from a consumer that died.")
    lost_after_s: float = Field(60.0, gt=0, description="A running run with no event, heartbeat or lock for this "
                                "long is lost (two heartbeat TTLs).")
    max_attempts: int = Field(3, ge=1, description="Attempts of a run before a lost run is failed.")
    cancel_grace_s: float = Field(30.0, ge=0, description="Cooperative cancel time before the task is revoked.")
    resend_after_s: float = Field(10.0, ge=0, description="A queued run whose task was not sent is re-sent after.")
    watchdog_every_s: float = Field(5.0, gt=0)
    schedule_every_s: float = Field(1.0, gt=0, description="How often the scheduler places queued runs on agents.")
    gang_form_timeout_s: float = Field(60.0, gt=0, description="A placed run whose machines have not all taken "
                                       "their devices by then gives them back and waits again.")
    starve_after_s: float = Field(600.0, ge=0, description="A run waiting this long for devices stops smaller runs "
                                  "from jumping ahead of it on the machines it could use.")
    schedule_batch: int = Field(500, ge=1, description="Queued runs the scheduler considers per pass.")
    heartbeat_retention_days: float = Field(14.0, gt=0, description="Worker telemetry history older than this is "
                                            "deleted (a worker beats every few seconds: ~17,000 rows a day).")
    sse_lifetime_s: float = Field(600.0, gt=0, description="An SSE connection is closed after this, with a retry.")
    sse_queue: int = Field(10_000, ge=1, description="Events buffered per SSE subscriber; one that falls further "
                           "behind re-reads SQL instead.")
    session_days: int = Field(30, ge=1, description="Lifetime of a browser session cookie.")
    cookie_secure: bool = Field(False, validation_alias=AliasChoices("MOCOLAB_COOKIE_SECURE", "cookie_secure"),
                                description="Mark the session cookie Secure (behind a TLS proxy; plain-HTTP "
                                "requests then carry no cookie).")
    max_body_bytes: int = Field(1 << 20, ge=1024, validation_alias=AliasChoices("MOCOLAB_MAX_BODY_BYTES",
                                "max_body_bytes"), description="Largest request body; larger ones get 413.")
    sse_per_token: int = Field(20, ge=1, validation_alias=AliasChoices("MOCOLAB_SSE_PER_TOKEN", "sse_per_token"),
                               description="Concurrent SSE streams per token (or browser session); 429 beyond.")
    submit_per_minute: int = Field(60, ge=1, validation_alias=AliasChoices("MOCOLAB_SUBMIT_PER_MINUTE",
                                   "submit_per_minute"), description="Run submissions per user and minute "
                                   "(a token bucket in Redis; bursts up to this many); 429 with Retry-After beyond.")
    # ---- notifications (server/notify/, docs/notifications.md)
    public_url: str | None = Field(None, validation_alias=AliasChoices("MOCOLAB_PUBLIC_URL", "public_url"),
                                   description="The address users reach the UI at, for the links in notifications "
                                   "(run pages, charts); None = http://<host>:<port>.")
    secret_key: str | None = Field(None, validation_alias=AliasChoices("MOCOLAB_SECRET_KEY", "secret_key"),
                                   description="Seals the channels' secrets in the database and signs chart links; "
                                   "None = a random key kept in <state>/secret.key (set it when several servers "
                                   "share a database).")
    smtp_host: str | None = Field(None, validation_alias=AliasChoices("MOCOLAB_SMTP_HOST", "smtp_host"),
                                  description="SMTP server for e-mail channels; None = no e-mail channels.")
    smtp_port: int = Field(587, ge=1, le=65535, validation_alias=AliasChoices("MOCOLAB_SMTP_PORT", "smtp_port"))
    smtp_user: str | None = Field(None, validation_alias=AliasChoices("MOCOLAB_SMTP_USER", "smtp_user"))
    smtp_password: str | None = Field(None, validation_alias=AliasChoices("MOCOLAB_SMTP_PASSWORD", "smtp_password"))
    smtp_starttls: bool = Field(True, validation_alias=AliasChoices("MOCOLAB_SMTP_STARTTLS", "smtp_starttls"),
                                description="Upgrade the connection with STARTTLS (refused if the server lacks it).")
    smtp_ssl: bool = Field(False, validation_alias=AliasChoices("MOCOLAB_SMTP_SSL", "smtp_ssl"),
                           description="TLS from the first byte (port 465) instead of STARTTLS.")
    smtp_from: str = Field("mocolab@localhost", validation_alias=AliasChoices("MOCOLAB_SMTP_FROM", "smtp_from"))
    smtp_timeout_s: float = Field(10.0, gt=0, validation_alias=AliasChoices("MOCOLAB_SMTP_TIMEOUT_S",
                                  "smtp_timeout_s"))
    smtp_ca_file: Path | None = Field(None, validation_alias=AliasChoices("MOCOLAB_SMTP_CA_FILE", "smtp_ca_file"),
                                      description="CA bundle the SMTP server's certificate is checked against; "
                                      "None = the system's.")
    notify_allow_nets: str = Field("", validation_alias=AliasChoices("MOCOLAB_NOTIFY_ALLOW_NETS",
                                   "notify_allow_nets"), description="Networks (CIDR, ',' separated) webhooks may "
                                   "point into although they are loopback, private or link-local; empty = none.")
    notify_every_s: float = Field(1.0, gt=0, description="How often the delivery loop looks for due messages.")
    notify_timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one webhook call.")
    notify_max_attempts: int = Field(8, ge=1, description="Tries of one message before it is marked failed.")
    notify_max_age_s: float = Field(86400.0, gt=0, description="A message not sent after this long is failed.")
    notify_backoff_s: float = Field(10.0, gt=0, description="Wait before the second try; doubles each try, with "
                                    "jitter, up to notify_backoff_max_s.")
    notify_backoff_max_s: float = Field(3600.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        """postgres:// and postgresql:// mean psycopg 3 (the driver installed)."""
        if value is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix):]
        return value

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'mocolab.db').resolve()}"

    @property
    def storage_root(self) -> Path:
        return (self.storage or self.state_dir / "storage").resolve()

    @property
    def packed_datasets_root(self) -> Path:
        """<storage>/datasets: the teams' packed copies, one folder per team id."""
        return self.storage_root / "datasets"

    @property
    def allowed_dataset_roots(self) -> list[Path]:
        parts = [p for chunk in self.dataset_roots.split(",") for p in chunk.split(os.pathsep)]
        roots = [Path(p.strip()).expanduser().resolve() for p in parts if p.strip()] or [Path("/usr/share/datasets")]
        return [self.packed_datasets_root, *(r for r in roots if r != self.packed_datasets_root)]

    @property
    def public_base(self) -> str:
        """The UI's address for links, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@lru_cache
def get_settings() -> Settings:
    """The process's single settings instance, read from the environment once."""
    return Settings()
