"""What the simulated WeChat says on the wire: error bodies with a `rid:` suffix, and
the exception its endpoints raise to give one.

Every error is HTTP 200 with `{"errcode": N, "errmsg": "<catalogue text><detail> rid: ..."}`
(docs/wechat-protocol.md §0); the texts come from the one catalogue in `wxgate.wechat.errors`.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from wxgate.wechat.errors import CATALOGUE

# What WeChat has appended to 40001 since ~2024 when a token is no longer the latest.
STABLE_TOKEN_HINT = ", could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r"

EMPTY_POST_DATA = 44002
DATA_FORMAT_ERROR = 47001

_OK_PREFIX = b'{"errcode":0,"errmsg":"ok","msgid":'


def rid() -> str:
    """A request id shaped like WeChat's: three groups of eight hex digits."""
    h = os.urandom(12).hex()
    return f"{h[:8]}-{h[8:16]}-{h[16:]}"


def error_body(errcode: int, detail: str = "") -> bytes:
    return orjson.dumps({"errcode": errcode, "errmsg": f"{errmsg(errcode)}{detail} rid: {rid()}"})


def errmsg(errcode: int) -> str:
    info = CATALOGUE.get(errcode)
    return info.errmsg if info is not None and info.errmsg else "error"


def sent_body(msgid: int) -> bytes:
    """The success answer of template/send; msgid written as an exact JSON integer."""
    return b"%s%d}" % (_OK_PREFIX, msgid)


OK_BODY = orjson.dumps({"errcode": 0, "errmsg": "ok"})


class Answer(Exception):
    """An errcode answer: raised by a rule deep in an endpoint, rendered once at its edge
    (it is what WeChat says, not a failure of the sandbox)."""

    __slots__ = ("detail", "errcode")

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.detail = detail

    def body(self) -> bytes:
        return error_body(self.errcode, self.detail)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or the Answer WeChat gives instead
    (44002 for an empty body, 47001 for anything but an object)."""
    if not body:
        raise Answer(EMPTY_POST_DATA)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Answer(DATA_FORMAT_ERROR) from None
    if type(value) is not dict:
        raise Answer(DATA_FORMAT_ERROR)
    return value
