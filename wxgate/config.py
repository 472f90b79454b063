"""Settings, in one place: a TOML file with WXGATE_* environment variables over it.

This is the only module that reads the environment. Secrets are `SecretStr`, so
no repr, log line or error text can print them. `load_settings` finds the file
(`--config PATH`, else ./wxgate.toml when present) and `check` lists what an
operator should fix before serving real traffic, one line per problem, without
printing a secret (what keeps a gateway from starting is startup.py's). The
file `wxgate config init` writes is starter_config.py's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wxgate.wechat.kinds import AccountKind

DEFAULT_CONFIG_FILE = "wxgate.toml"
WECHAT_API_BASE = "https://api.weixin.qq.com"
API_KEY_PREFIX = "sha256:"

TokenMode = Literal["stable", "classic", "external"]
Role = Literal["all", "api", "worker"]
GrantCheck = Literal["off", "warn", "enforce"]

# "HH:MM-HH:MM" (the window may wrap midnight) and "count/period" (s, m, h or d).
QUIET_HOURS_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"
LIMIT_PATTERN = r"^[1-9]\d{0,5}/[1-9]\d{0,5}[smhd]$"

NO_LISTENER = -1  # [server] worker_port: a worker process serves no HTTP at all
# What `config init` writes where only the user knows the value; `check` names each
# one still there. Angle brackets: no appid or AppSecret WeChat issues has them.
PLACEHOLDER_APPID = "<your AppID>"
PLACEHOLDER_SECRET = "<your AppSecret>"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Where a `--role worker` process serves /healthz, /readyz and /metrics. 0 (the
    # default): any free port, logged at start, so any number of workers share one host
    # and one config file. A fixed port suits one process per container (probes); -1:
    # no HTTP at all.
    worker_port: int = Field(0, ge=NO_LISTENER, le=65535)
    # "sha256:<hex>" of each accepted key; empty means the API is open (development only).
    api_keys: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    rate_limit_per_key_per_s: float = Field(200.0, gt=0)
    rate_limit_burst: int = Field(400, ge=1)
    metrics_require_key: bool = False
    callback_max_age_s: float = Field(300.0, gt=0)
    # Intake answers 503 when this many messages wait to be sent (0: no limit).
    max_queued: int = Field(0, ge=0)
    # A slow client is answered 408 and cut off: a request's head must arrive within
    # this many seconds (of the connection's start, or of its first byte after a
    # kept-alive pause), its body within this many of the head's end.
    request_head_timeout_s: float = Field(10.0, gt=0)
    request_body_timeout_s: float = Field(30.0, gt=0)
    # Signs the web console's session cookies (/ui). Empty: derived from the secrets the
    # config already holds, so every process sharing it honours the same sessions.
    console_secret: SecretStr = SecretStr("")
    # Hosts a message's own `callback_url` may name (exact, or "*.example.com" for its
    # subdomains); empty: no message may name one. Keeps the gateway from being made to
    # post to internal addresses.
    webhook_allowed_hosts: list[str] = Field(default_factory=list)

    def listen_port(self, role: Role) -> int | None:
        """The port a process of `role` serves HTTP on; None for a worker told to serve none."""
        if role != "worker":
            return self.port
        return None if self.worker_port == NO_LISTENER else self.worker_port

    @field_validator("api_keys")
    @classmethod
    def _hashed_keys_only(cls, keys: list[str]) -> list[str]:
        for key in keys:
            digest = key.removeprefix(API_KEY_PREFIX)
            if not key.startswith(API_KEY_PREFIX) or len(digest) != 64:
                raise ValueError('each api key must be "sha256:" followed by 64 hex digits')
            int(digest, 16)
        return [key.lower() for key in keys]


class StorageSettings(_Section):
    backend: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "wxgate.db"
    # FULL survives power loss; NORMAL survives a killed process only.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    group_commit_ms: float = Field(1.0, ge=0, le=100)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("wxgate", pattern=r"^[^{}]+$")  # no hash-tag braces
    # redis_url names one node of a Redis Cluster (docs/deployment.md, "Redis Cluster").
    redis_cluster: bool = False
    # A cluster's queue spread over this many partitions (hash slots), which workers
    # lease from in turn (docs/design.md, "Redis Cluster"); one server has one queue.
    redis_partitions: int = Field(1, ge=1, le=256)
    # How long terminal records are kept (Redis TTL, SQLite purge), and how often
    # worker processes purge what is older.
    retention_s: int = Field(7 * 24 * 3600, ge=60)
    purge_interval_s: float = Field(3600.0, gt=0)

    @model_validator(mode="after")
    def _partitions_need_a_cluster(self) -> StorageSettings:
        if self.redis_partitions > 1 and not (self.backend == "redis" and self.redis_cluster):
            raise ValueError("redis_partitions above 1 needs backend redis with redis_cluster")
        return self


class DeliverySettings(_Section):
    max_attempts: int = Field(8, ge=1)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_cap_s: float = Field(300.0, gt=0)
    lease_s: float = Field(60.0, gt=0)
    batch_size: int = Field(256, ge=1)
    # Sends in flight per worker process: a number, or "auto" (about the apps' rate limit
    # × WeChat's measured round trip, at most max_concurrency; wxgate/delivery/window.py).
    concurrency: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    max_concurrency: int = Field(512, ge=1)
    # In a process that also serves the API (--role all): how late the event loop may
    # run before the worker keeps fewer sends in flight, so intake answers first
    # (wxgate/delivery/loop_lag.py). 0 turns it off.
    yield_to_intake_ms: float = Field(4.0, ge=0)
    idle_poll_s: float = Field(0.05, gt=0)
    breaker_failures: int = Field(20, ge=1)
    breaker_cooldown_s: float = Field(30.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    pool_size: int = Field(100, ge=1)

    def most_in_flight(self) -> int:
        """The most sends a worker process keeps in flight."""
        return self.max_concurrency if self.concurrency == "auto" else self.concurrency


class WebhookSettings(_Section):
    """The webhook dispatcher of each worker process (docs/webhooks.md)."""

    concurrency: int = Field(32, ge=1)  # posts in flight per process
    timeout_s: float = Field(10.0, gt=0)  # a receiver's whole answer, connect included
    lease_s: float = Field(60.0, gt=0)
    retry_for_s: float = Field(24 * 3600.0, gt=0)  # then the event is dead (replayable)
    backoff_base_s: float = Field(5.0, gt=0)
    backoff_cap_s: float = Field(3600.0, gt=0)
    idle_poll_s: float = Field(0.2, gt=0)


WEBHOOK_SECRET_PREFIX = "whsec_"


def _webhook_secret_shape(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if not raw:
        return value
    try:
        key = base64.b64decode(raw.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except ValueError:
        key = b""
    if not raw.startswith(WEBHOOK_SECRET_PREFIX) or not 24 <= len(key) <= 64:
        raise ValueError(
            "webhook_secret must be whsec_ and 24-64 bytes in base64 "
            "(`wxgate webhooks secret` prints a fresh one)"
        )
    return value


class AppSettings(_Section):
    appid: str
    # An official account sends template messages and subscribe notifications; a mini
    # program its subscribe messages. Each kind has its own appid, secret and token.
    kind: AccountKind = AccountKind.OFFICIAL_ACCOUNT
    secret: SecretStr = SecretStr("")
    api_base: str = WECHAT_API_BASE
    token_mode: TokenMode = "stable"
    refresh_margin_s: float = Field(300.0, ge=0)
    callback_token: SecretStr = SecretStr("")
    encoding_aes_key: SecretStr = SecretStr("")
    rate_limit_per_s: float = Field(200.0, gt=0)
    # The template registry (docs/templates.md): how intake checks a message against the
    # app's templates (unset: enforce once a sync has succeeded, warn before), and how
    # often worker processes sync them from WeChat.
    template_check: Literal["off", "warn", "enforce"] | None = None
    template_sync_s: float = Field(3600.0, ge=1)
    # Subscribe messages (docs/subscribe.md): how intake treats a message without a grant
    # the ledger knows of; the templates whose accepts are long-term (WeChat's popup
    # event does not say); how long after a send its subscribe_msg_sent_event may come.
    grant_check: GrantCheck = "warn"
    long_term_templates: list[str] = Field(default_factory=list)
    sent_event_window_s: float = Field(600.0, gt=0, le=3600)
    # When this app sends nothing but urgent messages ("22:00-08:00", local to `timezone`),
    # how often one recipient may be sent to ("5/1h"; per template in
    # `per_template_limit`), what becomes of a message past it, and the window in which
    # the same message again is answered as a duplicate (docs/scheduling.md).
    quiet_hours: str | None = Field(None, pattern=QUIET_HOURS_PATTERN)
    timezone: str = "Asia/Shanghai"
    per_user_limit: str | None = Field(None, pattern=LIMIT_PATTERN)
    per_template_limit: dict[str, str] = Field(default_factory=dict)
    per_user_overflow: Literal["drop", "delay"] = "drop"
    dedupe_window_s: float = Field(0.0, ge=0)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. Asia/Shanghai)"
            ) from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _window_not_empty(cls, value: str | None) -> str | None:
        if value is not None and value[:5] == value[6:]:
            raise ValueError("the window starts where it ends; leave quiet_hours out instead")
        return value

    @field_validator("per_template_limit")
    @classmethod
    def _limits(cls, value: dict[str, str]) -> dict[str, str]:
        for template_id, limit in value.items():
            if re.fullmatch(LIMIT_PATTERN, limit) is None:
                raise ValueError(f"{template_id}: a limit reads like 5/1h (count/period)")
        return value

    # Status webhooks: where every settled status of the app's messages is POSTed, signed
    # with webhook_secret (Standard Webhooks). A message's own callback_url goes first.
    webhook_url: str | None = None
    webhook_secret: SecretStr = SecretStr("")

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("api_base must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key_shape(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and len(raw) != 43:
            raise ValueError("encoding_aes_key must be 43 characters (or empty for plaintext)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError("webhook_url must be an http(s) URL")
        return value

    _webhook_secret = field_validator("webhook_secret")(_webhook_secret_shape)

    @model_validator(mode="after")
    def _webhook_secret_with_url(self) -> AppSettings:
        if self.webhook_url and not self.webhook_secret.get_secret_value():
            raise ValueError("webhook_secret is required with webhook_url")
        return self

    @model_validator(mode="after")
    def _secret_unless_external(self) -> AppSettings:
        if self.token_mode != "external" and not self.secret.get_secret_value():
            raise ValueError("secret is required unless token_mode is 'external'")
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WXGATE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    apps: dict[str, AppSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments over the environment over the TOML file (load_settings
        # names the file by setting `toml_file` on a subclass).
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def app(self, name: str | None) -> tuple[str, AppSettings]:
        """The named app, or the only one when `name` is None; KeyError otherwise."""
        if name is None:
            if len(self.apps) != 1:
                raise KeyError("app is required when more than one app is configured")
            return next(iter(self.apps.items()))
        return name, self.apps[name]


def find_config_file(path: str | os.PathLike[str] | None) -> Path | None:
    if path is not None:
        return Path(path)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings from `path` (or ./wxgate.toml) with WXGATE_* variables over it."""
    toml_file = find_config_file(path)
    if toml_file is not None and not toml_file.is_file():
        raise FileNotFoundError(
            f"config file not found: {toml_file} (`wxgate config init --path {toml_file}` "
            "writes a starter one)"
        )
    if toml_file is not None:
        with toml_file.open("rb") as fh:
            tomllib.load(fh)  # a syntax error surfaces here with its line number
    if toml_file is None:
        return Settings(**overrides)

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    return FileSettings(**overrides)


def hash_api_key(key: str) -> str:
    """The config form of an API key: "sha256:<hex>"."""
    return API_KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def check(settings: Settings) -> list[str]:
    """Problems an operator should fix before serving real traffic, though a gateway
    would start (what keeps it from starting is `wxgate.startup`'s); empty when none."""
    problems: list[str] = []
    if not settings.server.api_keys:
        problems.append("server.api_keys: empty, so the API accepts requests without a key")
    for name, app in settings.apps.items():
        problems.extend(_placeholders(name, app))
        if app.api_base.startswith("http://") and "127.0.0.1" not in app.api_base:
            problems.append(
                f"apps.{name}.api_base: plain http outside loopback (WeChat needs https)"
            )
        if not app.callback_token.get_secret_value():
            problems.append(f"apps.{name}.callback_token: empty, so delivery reports are refused")
    return problems


def _placeholders(name: str, app: AppSettings) -> list[str]:
    problems = []
    if app.appid == PLACEHOLDER_APPID:
        problems.append(
            f"apps.{name}.appid: still {PLACEHOLDER_APPID}; put the account's AppID here "
            "(MP console: 设置与开发 > 基本配置)"
        )
    if app.secret.get_secret_value() == PLACEHOLDER_SECRET:
        problems.append(
            f"apps.{name}.secret: still {PLACEHOLDER_SECRET}; set "
            f"WXGATE_APPS__{name.upper()}__SECRET in the environment (or put it in the file)"
        )
    return problems
