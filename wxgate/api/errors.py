"""The HTTP API's one exception hierarchy: every refusal the API answers with.

Each class fixes an HTTP status and an envelope code (docs/design.md, "HTTP API").
They subclass Starlette's `HTTPException` on purpose: FastAPI re-raises an
HTTPException raised while it reads a body (the body-limit middleware raises
`PayloadTooLarge` from inside `receive`), where any other exception would be
turned into a generic 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException

Loc = Sequence[str | int]


class ApiError(HTTPException):
    """A request the API refuses; rendered as `{"code", "msg", "data"}`."""

    status: int = 500
    code: int = 50000

    def __init__(
        self,
        msg: str,
        *,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(self.status, msg, dict(headers) if headers else None)
        self.msg = msg
        self.data = data


class InvalidRequest(ApiError):
    """The request breaks the API's or WeChat's rules; `data.errors` names each field."""

    status, code = 400, 40000

    def __init__(self, errors: list[dict[str, Any]], msg: str = "invalid request") -> None:
        super().__init__(msg, data={"errors": errors})
        self.errors = errors

    @classmethod
    def at(cls, loc: Loc, msg: str) -> InvalidRequest:
        """One problem at one field path, e.g. `InvalidRequest.at(["body", "app"], "...")`."""
        return cls([{"loc": list(loc), "msg": msg}])


class Unauthorized(ApiError):
    """No API key, or one that is not configured."""

    status, code = 401, 40100

    def __init__(self, msg: str = "missing or invalid API key") -> None:
        super().__init__(msg, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    """Authenticated enough to be answered, but refused (bad callback signature, replay)."""

    status, code = 403, 40300


class NotFound(ApiError):
    """No such message, batch or app."""

    status, code = 404, 40400


class Conflict(ApiError):
    """The resource is in a state that does not allow the request."""

    status, code = 409, 40900


class KeyReused(ApiError):
    """An idempotency key already stored for a different request (nothing was stored)."""

    status, code = 422, 42200


class PayloadTooLarge(ApiError):
    """The body is over `server.max_body_bytes`."""

    status, code = 413, 41300


class RateLimited(ApiError):
    """This key used its request budget; `Retry-After` says when to come back."""

    status, code = 429, 42900

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "rate limit exceeded for this API key",
            data={"retry_after_s": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )


class NotReady(ApiError):
    """The gateway cannot take the request now (not ready, or the queue is too deep)."""

    status, code = 503, 50300
