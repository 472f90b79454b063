"""API keys, their scopes and apps, and the per-key request budget, checked by a
pure-ASGI middleware.

The config holds only "sha256:<hex>" of each key. A presented key is hashed and
compared with EVERY configured hash in constant time (no early exit), so the
answer time says nothing about which key, or how much of one, matched. A config key
may do everything. A key made with `wxgate keys new` lives in storage
(backends/api_keys.py) with a name, the apps it may use and its scopes; it is looked
up by its hash and the answer is cached for at most LOOKUP_CACHE_S, so a revocation
reaches every process within a second. Each key has its own token bucket; an empty
config key list leaves the API open (development) to requests without a key.

What a request needs is decided here, by method and path (`required_scope`): send
for intake, read for GETs, admin for keys and the audit log, operate for every
other change (replays, resumes, cancels, suppressions). The apps a key may use are
checked where a request's app is known (`require_app`), from the key the
middleware put in `PRINCIPAL`.

The check guards a path prefix (/v1/, and /metrics when configured) rather than
hanging on each route: a route added under /v1 cannot forget it, and a middleware
costs a few microseconds where FastAPI's dependency machinery cost ~60 (measured).
"""

from __future__ import annotations

import contextvars
import hmac
import math
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send

from wxgate.api.errors import ApiError, Forbidden, RateLimited, Unauthorized
from wxgate.api.schemas import failure
from wxgate.backends.api_keys import SCOPES, StoredKey
from wxgate.backends.base import Backend
from wxgate.clock import Clock
from wxgate.config import hash_api_key
from wxgate.tokenbucket import TokenBucket

PROTECTED_PREFIX = "/v1/"
METRICS_PATH = "/metrics"
SECURITY_SCHEME = "apiKey"
LOOKUP_CACHE_S: Final = 0.5  # how stale a stored key's look-up may be (revocation: < 1 s)
TOUCH_EVERY_S: Final = 60.0  # how often a stored key's last use is written
_ADMIN_PATHS: Final = ("/v1/keys", "/v1/audit")
_SEND_PATHS: Final = frozenset(("/v1/messages", "/v1/messages/batch"))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a key's name, the apps (None: every app) and scopes."""

    name: str
    apps: frozenset[str] | None
    scopes: frozenset[str]
    key_id: str | None = None  # a stored key's id

    @classmethod
    def stored(cls, key: StoredKey) -> Principal:
        apps = frozenset(key.apps) if key.apps else None
        return cls(key.name, apps, frozenset(key.scopes), key.id)


EVERYTHING = frozenset(SCOPES)
ANONYMOUS = Principal("anonymous", None, EVERYTHING)  # an open API (no config keys)
# The key of the request being served (set by ApiKeyMiddleware; None: not protected).
PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "wxgate_principal", default=None
)


def required_scope(method: str, path: str) -> str:
    """The scope a request needs."""
    if path.startswith(_ADMIN_PATHS):
        return "admin"
    if method == "POST" and path in _SEND_PATHS:
        return "send"
    if method in ("GET", "HEAD") or path == METRICS_PATH:
        return "read"
    return "operate"


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(
            f"this key ({principal.name}) lacks the scope {scope!r}",
            data={"missing_scope": scope},
        )


def require_app(app: str) -> None:
    """403 unless the request's key may use `app`."""
    principal = PRINCIPAL.get()
    if principal is None or principal.apps is None or app in principal.apps:
        return
    raise Forbidden(
        f"this key ({principal.name}) may not use app {app!r}",
        data={"app": app, "allowed": sorted(principal.apps)},
    )


def app_for_listing(app: str | None) -> str | None:
    """The app a listing (or a replay by filter) covers: the one asked for, if the key
    may use it; for a key limited to one app and no app asked for, that app; 403 for
    a key limited to several apps that names none of them."""
    principal = PRINCIPAL.get()
    if principal is None or principal.apps is None:
        return app
    if app is not None:
        require_app(app)
        return app
    if len(principal.apps) == 1:
        return next(iter(principal.apps))
    raise Forbidden(
        f"this key ({principal.name}) may use some apps only: name one of them",
        data={"allowed": sorted(principal.apps)},
    )


def actor() -> str:
    """The name the audit log records for the request's key."""
    principal = PRINCIPAL.get()
    return ANONYMOUS.name if principal is None else principal.name


class ApiKeys:
    """The configured key hashes and the stored keys, each with its own request budget."""

    def __init__(
        self,
        hashes: list[str],
        rate_per_s: float,
        burst: int,
        backend: Backend | None = None,
    ) -> None:
        self._hashes = tuple(hashes)
        self._buckets = [TokenBucket(rate=rate_per_s, capacity=burst) for _ in hashes]
        self._backend = backend  # its api_key_store(), read when a key is not a config one
        self._rate, self._burst = rate_per_s, burst
        self._stored_buckets: dict[str, TokenBucket] = {}
        self._lookups: dict[str, tuple[float, StoredKey | None]] = {}
        self._touched: dict[str, float] = {}

    @property
    def open(self) -> bool:
        return not self._hashes

    def identify(self, presented: str) -> int | None:
        """The index of the matching configured key, or None."""
        digest = hash_api_key(presented)
        found: int | None = None
        for index, candidate in enumerate(self._hashes):
            if hmac.compare_digest(candidate, digest):
                found = index
        return found

    def admit(self, index: int, now: float) -> float:
        """0 when the key may make a request now; else the seconds until it may."""
        bucket = self._buckets[index]
        if bucket.take(1, now):
            return 0.0
        return bucket.wait_time(now)

    def authorize(self, presented: str | None, now: float) -> None:
        """Raise Unauthorized or RateLimited unless this request may go on (config keys
        only; `principal` also knows the stored ones)."""
        if self.open:
            return
        index = None if presented is None else self.identify(presented)
        if index is None:
            raise Unauthorized()
        wait = self.admit(index, now)
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))

    async def principal(self, presented: str | None, monotonic: float, now: float) -> Principal:
        """Who the request comes from; Unauthorized or RateLimited unless it may go on."""
        index = None if presented is None else self.identify(presented)
        if index is not None:
            self._admitted(self.admit(index, monotonic))
            return Principal(f"config-{index + 1}", None, EVERYTHING)
        stored = None if presented is None else await self._stored(presented, monotonic)
        if stored is None:
            if self.open:  # development: any request goes, as before there were scopes
                return ANONYMOUS
            raise Unauthorized()
        bucket = self._stored_buckets.get(stored.id)
        if bucket is None:
            bucket = self._stored_buckets[stored.id] = TokenBucket(self._rate, self._burst)
        self._admitted(0.0 if bucket.take(1, monotonic) else bucket.wait_time(monotonic))
        await self._touch(stored, monotonic, now)
        return Principal.stored(stored)

    @staticmethod
    def _admitted(wait: float) -> None:
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))

    async def _stored(self, presented: str, monotonic: float) -> StoredKey | None:
        if self._backend is None:
            return None
        digest = hash_api_key(presented)
        cached = self._lookups.get(digest)
        if cached is not None and monotonic - cached[0] < LOOKUP_CACHE_S:
            return cached[1]
        found = await self._backend.api_key_store().find(digest)
        if len(self._lookups) > 10_000:  # guessed keys must not grow it without bound
            self._lookups.clear()
        self._lookups[digest] = (monotonic, found)
        return found

    async def _touch(self, key: StoredKey, monotonic: float, now: float) -> None:
        assert self._backend is not None
        last = self._touched.get(key.id)
        if last is None or monotonic - last >= TOUCH_EVERY_S:
            self._touched[key.id] = monotonic
            await self._backend.api_key_store().touch(key.id, now)


TWO_AUTHORIZATIONS = "more than one Authorization header; send the API key in one"


def bearer_token(scope: Scope) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None; Unauthorized for two
    such headers, of which a proxy in front and this server might each read another."""
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(values) > 1:
        raise Unauthorized(TWO_AUTHORIZATIONS)
    if not values:
        return None
    scheme, _, key = bytes(values[0]).decode("latin-1").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class ApiKeyMiddleware:
    """401 without a known key, 429 over its budget, 403 outside its scopes, on every
    protected path; the key's Principal is in PRINCIPAL while the request is served."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, clock: Clock, protect_metrics: bool) -> None:
        self.app = app
        self._keys = keys
        self._clock = clock
        self._protect_metrics = protect_metrics

    def _protects(self, path: str) -> bool:
        if path.startswith(PROTECTED_PREFIX):
            return True
        return self._protect_metrics and path == METRICS_PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._protects(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            presented = bearer_token(scope)
            now = self._clock.now()
            principal = await self._keys.principal(presented, self._clock.monotonic(), now)
            require_scope(principal, required_scope(scope["method"], scope["path"]))
        except ApiError as exc:
            answer = failure(exc.status, exc.code, exc.msg, exc.data, exc.headers)
            await answer(scope, receive, send)
            return
        token = PRINCIPAL.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            PRINCIPAL.reset(token)


def document_api_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema with the bearer key declared on every protected operation."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key; the config keeps only its SHA-256.",
    }
    for path, operations in schema.get("paths", {}).items():
        if path.startswith(PROTECTED_PREFIX):
            for operation in operations.values():
                operation["security"] = [{SECURITY_SCHEME: []}]
    return schema
