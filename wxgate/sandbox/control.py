"""A client for the sandbox's /sandbox/ control endpoints, for tests, benchmarks and the demo."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from wxgate.sandbox.errors import ControlError


class SandboxControl:
    """Inspect and steer a running sandbox over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def _call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        data = orjson.dumps(body) if body is not None else None
        async with self._session.request(
            method, f"{self.base_url}{path}", params=params, data=data
        ) as response:
            raw = await response.read()
        if response.status != 200:
            raise ControlError(response.status, raw.decode("utf-8", "replace").strip())
        return orjson.loads(raw)  # orjson keeps msgids above 2^53 exact

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/sandbox/stats")

    async def inbox(self, **filters: Any) -> dict[str, Any]:
        """`{"total": n, "items": [...]}`; filters: appid, touser, client_msg_id, kind
        (template, subscribe or miniprogram), limit, offset."""
        params = {k: str(v) for k, v in filters.items() if v is not None}
        return await self._call("GET", "/sandbox/messages", params=params)

    async def messages(self, **filters: Any) -> list[dict[str, Any]]:
        """The accepted sends matching the filters (those of `inbox`)."""
        return (await self.inbox(**filters))["items"]

    async def send_rate(self, window_s: float = 1.0, appid: str | None = None) -> dict[str, Any]:
        """Per appid: sends so far (every kind) and the busiest window of `window_s` seconds,
        `{"window_s": w, "accounts": {appid: {"sends": n, "busiest": {"sends", "from", "to"}}}}`."""
        params = {"window_s": repr(window_s), **({"appid": appid} if appid else {})}
        return await self._call("GET", "/sandbox/send-rate", params=params)

    async def faults(self) -> dict[str, Any]:
        return await self._call("GET", "/sandbox/faults")

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge fault settings (see /sandbox/faults); returns the settings now in force."""
        return await self._call("POST", "/sandbox/faults", body=faults)

    async def reset(self) -> None:
        await self._call("POST", "/sandbox/reset")

    async def now(self) -> float:
        return float((await self._call("GET", "/sandbox/clock"))["now"])

    async def advance_clock(self, seconds: float) -> float:
        """Move the sandbox clock forward; returns its new time."""
        answer = await self._call("POST", "/sandbox/clock", body={"advance_s": seconds})
        return float(answer["now"])

    async def foreign_refresh(
        self, appid: str | None = None, endpoint: str = "token"
    ) -> dict[str, Any]:
        """Play another system fetching the account's token: `token` (a classic
        /cgi-bin/token call: ours works 300 s more, then 40001) or `stable_token` (a
        force_refresh: our stable token fails at once). `{"replaced": bool, ...}`."""
        body = {"endpoint": endpoint, **({"appid": appid} if appid else {})}
        return await self._call("POST", "/sandbox/tokens/foreign-refresh", body=body)

    async def popup(
        self,
        appid: str,
        openid: str,
        template_id: str | list[str],
        action: str = "accept",
        **options: Any,
    ) -> dict[str, Any]:
        """Play a user answering a subscribe popup (options: type, popup_scene); the
        grants after it, and whether its event was pushed."""
        ids = template_id if isinstance(template_id, list) else [template_id]
        body = {"appid": appid, "openid": openid, "template_ids": ids, "action": action}
        return await self._call("POST", "/sandbox/subscribe/popup", body=body | options)

    async def unsubscribe(self, appid: str, openid: str, template_id: str) -> dict[str, Any]:
        """Play a user turning a subscribe template off in the settings (a change event)."""
        body = {"appid": appid, "openid": openid, "template_id": template_id}
        return await self._call("POST", "/sandbox/subscribe/change", body=body)

    async def grants(self, appid: str, openid: str | None = None) -> list[dict[str, Any]]:
        """The grant ledger of an account: `[{openid, template_id, one_time, long_term}]`."""
        params = {"appid": appid, **({"openid": openid} if openid else {})}
        return (await self._call("GET", "/sandbox/subscribe/grants", params=params))["grants"]

    async def wait_for_callbacks(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Wait until no callback is queued or in flight; returns the callback counters."""
        deadline = time.monotonic() + timeout_s
        while True:
            callbacks = (await self.stats())["callbacks"]
            if callbacks["pending"] == 0:
                return callbacks
            if time.monotonic() >= deadline:
                raise TimeoutError(f"callbacks still pending after {timeout_s} s: {callbacks}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SandboxControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
