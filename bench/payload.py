"""The one template message every case sends, in each shape a sender needs it.

A realistic body: four typed keywords (WeChat checks their shapes), a link and
an openid of WeChat's length; recipients differ by number so no two are alike.
"""

from __future__ import annotations

from typing import Any

import orjson

TEMPLATE_ID = "Doclyl5uP7Aciu-qZ7mJNPtWkbkYnWBWVja26EGbNyk"
DATA: dict[str, dict[str, str]] = {
    "thing1": {"value": "订单已发货"},
    "time2": {"value": "2024-05-01 15:01"},
    "amount3": {"value": "¥128.00"},
    "character_string4": {"value": "SF1234567890"},
}
URL_PREFIX = "https://example.com/orders/"

# The raw template/send body, formatted rather than serialised: the ceiling's
# client and the raw load generators should spend nothing on building it.
_SEND_FORMAT = (
    '{"touser":"%(touser)s","template_id":"' + TEMPLATE_ID + '","url":"' + URL_PREFIX + '%(n)d",'
    '"client_msg_id":"%(client)s-%(n)d","data":' + orjson.dumps(DATA).decode() + "}"
)


def openid(n: int) -> str:
    """A 28-character openid, like WeChat's."""
    return f"oBench{n % 10_000_000:07d}xxxxxxxxxxxxxxx"


def template_send_body(client: str, n: int) -> bytes:
    """WeChat's template/send body for message `n` of sender `client`."""
    return (_SEND_FORMAT % {"touser": openid(n), "n": n, "client": client}).encode()


def wechat_message(n: int) -> dict[str, Any]:
    """Message `n` as template/send fields (what wechatpy and wxgate's storage take)."""
    url = f"{URL_PREFIX}{n}"
    return {"touser": openid(n), "template_id": TEMPLATE_ID, "url": url, "data": DATA}


def api_message(n: int) -> bytes:
    """The body of POST /v1/messages for message `n`."""
    return orjson.dumps(wechat_message(n))


def api_batch(first: int, count: int) -> bytes:
    """The body of POST /v1/messages/batch for messages first .. first + count - 1."""
    recipients = [openid(n) for n in range(first, first + count)]
    shared = {"template_id": TEMPLATE_ID, "url": f"{URL_PREFIX}{first}", "data": DATA}
    return orjson.dumps({**shared, "recipients": recipients})
