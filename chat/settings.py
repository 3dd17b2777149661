"""Settings: one frozen object read once from the environment and checked before anything starts.

Every setting is an environment variable of the same name in upper case; the README's table
lists them. Durations are in seconds unless the name says otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Literal

import limits
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from storage.database import normalise_url

SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
MIN_SECRET_LENGTH = 32
# What `normalise_url` makes of every URL Parley can use (it has these two drivers).
SUPPORTED_DATABASES = ("postgresql+asyncpg://", "sqlite+aiosqlite:///")


# A browser's `Origin`: scheme, host and an optional port, nothing after.
ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def split_origins(origins: str) -> list[str]:
    return [o.strip() for o in origins.split(",") if o.strip()]


def split_proxies(proxies: str) -> list[str]:
    """`TRUSTED_PROXIES`: addresses or networks, comma separated."""
    return [p.strip() for p in proxies.split(",") if p.strip()]


class SettingsError(Exception):
    """A setting has a value the service cannot run with; the message is one readable line."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    parley_env: Literal["development", "production"] = "development"
    parley_var_dir: Path = Path("var")
    database_url: str = ""
    database_pool_size: int = Field(10, ge=1, le=200)
    redis_url: str = ""
    # The Redis bridge: every call's deadline, the heartbeat, the reconnection backoff's cap and
    # how many events may wait for Redis before it is treated as down.
    redis_timeout_s: float = Field(2 * SECONDS, gt=0)
    redis_ping_s: float = Field(5 * SECONDS, gt=0)
    redis_reconnect_max_s: float = Field(10 * SECONDS, gt=0)
    redis_queue_size: int = Field(100_000, ge=1)
    # How long a conversation's lease in Redis outlives its holder (one actor per conversation
    # across instances): a dead instance's conversations move after at most this.
    actor_lease_s: float = Field(10 * SECONDS, gt=0)
    jwt_secret: str = ""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "parley"
    jwt_audience: str = "parley-api"
    access_token_ttl_s: float = Field(1 * HOURS, gt=0)
    registration_enabled: bool = True
    # How long a looked-up user is reused; a deactivation takes effect within this.
    auth_cache_s: float = Field(5 * SECONDS, ge=0)
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).
    password_hash_time_cost: int = Field(3, ge=1, le=20)
    password_hash_memory_kib: int = Field(64 * 1024, ge=8, le=4 * 1024 * 1024)
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Soft-deleted conversations are purged after their retention, checked this often.
    retention_days: int = Field(30, ge=0)
    sweep_interval_s: float = Field(1 * HOURS, gt=0)
    # The assistant.
    assistant_provider: Literal["local", "openai"] = "local"
    assistant_token_delay_ms: float = Field(30, ge=0)
    kb_article_url: str = "https://help.example.com/articles/{slug}"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = ""
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = Field(60 * SECONDS, gt=0)
    # Silence allowed between streamed chunks once the reply started (the timeout covers the
    # wait for the first one).
    openai_stall_s: float = Field(20 * SECONDS, gt=0)
    openai_max_retries: int = Field(2, ge=0, le=10)
    # Tools through MCP (docs/tools.md): the servers file, Parley's own server, each call's
    # deadline and how many rounds of tool calls one reply may make.
    mcp_config: str = ""
    mcp_parley_server: bool = True
    mcp_call_timeout_s: float = Field(30 * SECONDS, gt=0)
    mcp_max_tool_rounds: int = Field(5, ge=1, le=50)
    # Actors and their events.
    actor_idle_s: float = Field(5 * MINUTES, gt=0)
    actor_max_live: int = Field(10_000, ge=1)
    actor_mailbox_size: int = Field(64, ge=1)
    actor_history_messages: int = Field(50, ge=1)
    shutdown_grace_s: float = Field(10 * SECONDS, ge=0)
    reply_timeout_s: float = Field(5 * MINUTES, gt=0)
    events_retained: int = Field(1000, ge=1)
    events_retained_s: float = Field(10 * MINUTES, gt=0)
    events_retained_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    subscriber_queue_size: int = Field(1000, ge=1)
    sse_keepalive_s: float = Field(15 * SECONDS, gt=0)
    # The WebSocket (`/ws/chat`).
    ws_max_sockets_per_user: int = Field(10, ge=1)
    ws_queue_size: int = Field(1000, ge=1)
    ws_message_rate: str = "30/minute"
    ws_typing_rate: str = "5/10seconds"
    # Origins (comma-separated) whose pages may call the REST API; empty: no CORS headers.
    cors_origins: str = ""
    # Rate limits and quotas (chat/throttle.py), shared through Redis when `REDIS_URL` is set.
    # Each is one or more windows ("10/minute;100/day"); empty turns that limit off.
    # Sign-in and registration attempts, counted before any password is hashed.
    auth_rate_per_address: str = "300/minute"
    auth_rate_per_email: str = "10/minute;100/day"
    # Messages per user over REST, SSE and the WebSocket together; off by default (set it to
    # what the model may cost, e.g. "20/minute;500/day").
    user_message_rate: str = ""
    # Replies one user may have in generation at once, per instance; 0 turns it off.
    user_concurrent_replies: int = Field(0, ge=0)
    # Proxies whose `X-Forwarded-For` names the client (addresses or networks, comma
    # separated); without it the peer address is the client's.
    trusted_proxies: str = ""
    # Metrics (`/metrics`, Prometheus text format): on the main listener, or on one of its own.
    metrics_enabled: bool = False
    metrics_bind: str = ""
    # `text` (one readable line per record) or `json` (one JSON object per line).
    log_format: Literal["text", "json"] = "text"

    @field_validator(
        "ws_message_rate",
        "ws_typing_rate",
        "auth_rate_per_address",
        "auth_rate_per_email",
        "user_message_rate",
    )
    @classmethod
    def _check_rate(cls, rate: str, info: ValidationInfo) -> str:
        optional = info.field_name not in ("ws_message_rate", "ws_typing_rate")
        if optional and not rate.strip():
            return ""
        try:
            limits.parse_many(rate) if optional else limits.parse(rate)
        except ValueError:
            raise ValueError(
                f"{rate!r} is not a rate such as '30/minute' or '10/minute;100/day'"
            ) from None
        return rate.strip()

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, proxies: str) -> str:
        for proxy in split_proxies(proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return proxies

    @field_validator("metrics_bind")
    @classmethod
    def _check_bind(cls, bind: str) -> str:
        host, _, port = bind.strip().rpartition(":")
        if bind.strip() and (not host or not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError(f"{bind!r} is not host:port, such as 0.0.0.0:9100")
        return bind.strip()

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: str) -> str:
        for origin in split_origins(origins):
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin such as 'https://shop.example.com' or "
                    "'http://localhost:3000' (scheme and host, no path)"
                )
        return origins

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins of `CORS_ORIGINS`, empty when CORS is off."""
        return split_origins(self.cors_origins)

    @field_validator("mcp_config")
    @classmethod
    def _check_servers_file(cls, path: str) -> str:
        # Read at start so that a bad file fails every command in one line, not a reply later.
        if path:
            from chat.tools.config import read_servers_file

            read_servers_file(Path(path))
        return path

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, level: object) -> object:
        return level.strip().upper() if isinstance(level, str) else level

    @field_validator("database_url")
    @classmethod
    def _check_scheme(cls, url: str) -> str:
        if url and not normalise_url(url).startswith(SUPPORTED_DATABASES):
            scheme = url.split("://", 1)[0] if "://" in url else url
            raise ValueError(
                f"unsupported database {scheme!r}; use postgresql://… or sqlite:///PATH"
            )
        return url

    @field_validator("jwt_secret")
    @classmethod
    def _check_secret(cls, secret: str, info: ValidationInfo) -> str:
        # `parley_env` is declared first, so it is already validated here.
        if info.data.get("parley_env") == "production":
            if not secret:
                raise ValueError("JWT_SECRET is required when PARLEY_ENV=production")
            if len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters in production"
                )
        return secret

    @property
    def database(self) -> str:
        """The database URL, the embedded SQLite file under the var folder by default."""
        if self.database_url:
            return normalise_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.parley_var_dir.resolve() / 'parley.db'}"


def _dev_secret(var_dir: Path) -> str:
    """A development secret made once and kept, so tokens survive restarts."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "jwt_secret"
    if not path.exists():
        # O_EXCL: two instances starting together must not overwrite each other's secret.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and check the settings; `SettingsError` with a one-line message if one is wrong."""
    values = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
    fields = Settings.model_fields
    try:
        settings = Settings.model_validate({k: v for k, v in values.items() if k in fields})
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {name}: {message}") from None
    if not settings.jwt_secret:
        secret = _dev_secret(settings.parley_var_dir)
        settings = settings.model_copy(update={"jwt_secret": secret})
    return settings
