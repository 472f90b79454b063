"""The route class of every API route: request bodies decoded by `jsonbody.decode`.

orjson.JSONDecodeError subclasses json.JSONDecodeError, so FastAPI reports a body
that is not JSON as a `json_invalid` validation error (400 with the position); a
member repeated in one object is InvalidRequest (400 with its path).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.jsonbody import decode


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode(await self.body())
        return self._json


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return handle
