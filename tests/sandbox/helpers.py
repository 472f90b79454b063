"""How the sandbox tests talk to it: WeChat's endpoints as a client calls them."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_MINI_APPID,
    DEFAULT_MINI_SECRET,
    DEFAULT_SECRET,
)

SEND = "/cgi-bin/message/template/send"
BIZSEND = "/cgi-bin/message/subscribe/bizsend"
SUBSCRIBE_SEND = "/cgi-bin/message/subscribe/send"
NEWTMPL = "/wxaapi/newtmpl/"

# Library template 1001 (订单发货通知) with keywords 1, 2, 3 and 6 (an enum), and values
# that keep its rules.
ORDER_SHIPPED_KIDS = [1, 2, 3, 6]
ORDER_SHIPPED_DATA = {
    "character_string1": {"value": "XN2024050100123"},
    "thing2": {"value": "无线蓝牙耳机"},
    "time3": {"value": "2024-05-01 15:01"},
    "enum_string6": {"value": "已发货"},
}


def message(touser: str = "oUser0001", template_id: str = "TPL_ok", **extra: Any) -> dict:
    """A valid template/send body."""
    body: dict[str, Any] = {
        "touser": touser,
        "template_id": template_id,
        "data": {"thing1": {"value": "订单已发货"}, "time2": {"value": "2024-05-01 15:01"}},
    }
    body.update(extra)
    return body


def subscribe_message(touser: str, template_id: str, **extra: Any) -> dict:
    """A valid subscribe send body for a template added from library template 1001."""
    body: dict[str, Any] = {
        "touser": touser,
        "template_id": template_id,
        "data": {key: dict(item) for key, item in ORDER_SHIPPED_DATA.items()},
    }
    body.update(extra)
    return body


class WeChatCalls:
    """WeChat's endpoints on one sandbox, as a client calls them (answers parsed by orjson,
    so int64 msgids stay exact)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.base_url + path, params=params) as response:
            assert response.status == 200
            return orjson.loads(await response.read())

    async def post(self, path: str, body: bytes | dict | None, **params: str) -> Any:
        data = orjson.dumps(body) if isinstance(body, dict) else body
        async with self.session.post(self.base_url + path, params=params, data=data) as response:
            assert response.status == 200
            return orjson.loads(await response.read())

    async def classic(self, appid: str = DEFAULT_APPID, secret: str = DEFAULT_SECRET) -> Any:
        return await self.get(
            "/cgi-bin/token", grant_type="client_credential", appid=appid, secret=secret
        )

    async def stable(
        self, appid: str = DEFAULT_APPID, secret: str = DEFAULT_SECRET, force: bool | None = None
    ) -> Any:
        body: dict[str, Any] = {"grant_type": "client_credential", "appid": appid, "secret": secret}
        if force is not None:
            body["force_refresh"] = force
        return await self.post("/cgi-bin/stable_token", body)

    async def token(self) -> str:
        return (await self.stable())["access_token"]

    async def mini_token(self) -> str:
        """A token of the default mini program."""
        return (await self.stable(DEFAULT_MINI_APPID, DEFAULT_MINI_SECRET))["access_token"]

    async def send(self, token: str, body: bytes | dict | None = None) -> Any:
        return await self.post(SEND, message() if body is None else body, access_token=token)

    async def add_subscribe_template(
        self, token: str, tid: str = "1001", kids: list[int] | None = None
    ) -> str:
        """Add a library template to the token's account; its priTmplId."""
        body = {"tid": tid, "kidList": kids or ORDER_SHIPPED_KIDS, "sceneDesc": "发货提醒"}
        answer = await self.post(NEWTMPL + "addtemplate", body, access_token=token)
        assert answer["errcode"] == 0, answer
        return answer["priTmplId"]


async def to_next_window(control: Any, width_s: float, shift_s: float = 0.0) -> None:
    """Move the sandbox clock just past the start of its next window (a minute, a Beijing
    day), so a test that counts within one window cannot straddle two."""
    now = await control.now()
    await control.advance_clock(width_s - (now + shift_s) % width_s + 0.01)


async def to_next_minute(control: Any) -> None:
    await to_next_window(control, 60.0)


async def to_next_beijing_day(control: Any) -> None:
    await to_next_window(control, 86_400.0, 8 * 3600.0)
