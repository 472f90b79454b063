"""API keys and the per-key request budget, checked by a pure-ASGI middleware.

The config holds only "sha256:<hex>" of each key. A presented key is hashed and
compared with EVERY configured hash in constant time (no early exit), so the
answer time says nothing about which key, or how much of one, matched. Each key
has its own token bucket; an empty key list leaves the API open (development).

The check guards a path prefix (/v1/, and /metrics when configured) rather than
hanging on each route: a route added under /v1 cannot forget it, and a middleware
costs a few microseconds where FastAPI's dependency machinery cost ~60 (measured).
"""

from __future__ import annotations

import hmac
import math
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from wxgate.api.errors import ApiError, RateLimited, Unauthorized
from wxgate.api.schemas import failure
from wxgate.clock import Clock
from wxgate.config import hash_api_key
from wxgate.tokenbucket import TokenBucket

PROTECTED_PREFIX = "/v1/"
METRICS_PATH = "/metrics"
SECURITY_SCHEME = "apiKey"


class ApiKeys:
    """The configured key hashes, each with its own request budget."""

    def __init__(self, hashes: list[str], rate_per_s: float, burst: int) -> None:
        self._hashes = tuple(hashes)
        self._buckets = [TokenBucket(rate=rate_per_s, capacity=burst) for _ in hashes]

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
        """Raise Unauthorized or RateLimited unless this request may go on."""
        if self.open:
            return
        index = None if presented is None else self.identify(presented)
        if index is None:
            raise Unauthorized()
        wait = self.admit(index, now)
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))


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
    """401 without a configured key, 429 over its budget, on every protected path."""

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
        if scope["type"] == "http" and not self._keys.open and self._protects(scope["path"]):
            try:
                self._keys.authorize(bearer_token(scope), self._clock.monotonic())
            except ApiError as exc:
                answer = failure(exc.status, exc.code, exc.msg, exc.data, exc.headers)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
