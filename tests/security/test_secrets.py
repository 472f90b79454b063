"""Known secrets never leave a running gateway: not the AppSecrets, callback tokens, AES
key or API keys it was given, nor the access tokens it fetched, in any error answer,
any other answer, any metric or any line of its (DEBUG) log. A refused callback does
not answer with the signature it expected (that would be a signing oracle), and metric
labels come from bounded sets only (never an openid or a message id).

The session-wide check in tests/conftest.py covers the log lines of the test process
itself; these tests cover what the gateway process says. The chaos campaign makes the
same checks of its own processes (tests/chaos/checks.py).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.checks import TOKEN_SHAPE
from wxgate.api.routes.callback import REFUSAL_FIXES, REFUSED_OTHER, UNKNOWN_APP
from wxgate.backends.base import Status
from wxgate.wechat.callback import CallbackCodec, sign, template_finish_xml
from wxgate.wechat.errors import Category
from wxgate.wechat.kinds import MessageKind

from .conftest import (
    AES_KEY,
    API_KEY,
    FOREIGN_APPID,
    KNOWN_SECRETS,
    PLAIN_APPID,
    PLAIN_TOKEN,
    SAFE_APPID,
    SAFE_TOKEN,
    Client,
    Deployment,
)

LEAK = re.compile("|".join([*map(re.escape, KNOWN_SECRETS), TOKEN_SHAPE.pattern]).encode())


def leaks(data: bytes) -> list[bytes]:
    return LEAK.findall(data)


async def answer_bytes(client: Client, method: str, path: str, **kwargs: Any) -> bytes:
    """Status line, headers and body of one answer, as one byte string to search."""
    headers = kwargs.pop("headers", {})
    async with client.http.request(method, client.url + path, headers=headers, **kwargs) as reply:
        body = await reply.read()
        head = "".join(f"{k}: {v}\n" for k, v in reply.headers.items())
        return f"{reply.status}\n{head}".encode() + body


@pytest.fixture
async def sent(client: Client) -> list[tuple[str, str]]:
    """(message id, openid) of messages the gateway sent with a token it fetched."""
    openids = [f"oLEAK{n:04d}{int(time.time())}" for n in range(3)]
    ids = [await client.send("plain", openid) for openid in openids]
    for message_id in ids:
        assert (await client.until_status(message_id, "sent"))["status"] == "sent"
    return list(zip(ids, openids, strict=True))


def refused_callbacks() -> list[tuple[str, dict[str, str], bytes, str]]:
    """(app, query, body, the signature it would have needed) of pushes that are refused."""
    timestamp, nonce = str(int(time.time())), "424242"
    xml = template_finish_xml("gh_x", "oA", int(timestamp), 1, "success")
    forged_plain, body = CallbackCodec("guessed-token", PLAIN_APPID).seal(xml, timestamp, nonce)
    forged_safe, sealed = CallbackCodec("guessed-token", SAFE_APPID, AES_KEY).seal(
        xml, timestamp, nonce
    )
    foreign, foreign_body = CallbackCodec(SAFE_TOKEN, FOREIGN_APPID, AES_KEY).seal(
        xml, timestamp, "1"
    )
    bad_msg_signature, safe_body = CallbackCodec(SAFE_TOKEN, SAFE_APPID, AES_KEY).seal(
        xml, timestamp, "2"
    )
    bad_msg_signature["msg_signature"] = "f" * 40
    return [
        ("plain", forged_plain, body, sign(PLAIN_TOKEN, timestamp, nonce)),
        ("safe", forged_safe, sealed, sign(SAFE_TOKEN, timestamp, nonce)),
        ("safe", foreign, foreign_body, ""),
        ("safe", bad_msg_signature, safe_body, ""),
        (
            "plain",
            {**forged_plain, "signature": ""},
            b"<xml/>",
            sign(PLAIN_TOKEN, timestamp, nonce),
        ),
    ]


async def test_no_error_answer_carries_a_secret_or_the_expected_signature(
    client: Client, sent: list[tuple[str, str]]
) -> None:
    answers = [
        await answer_bytes(client, "GET", "/v1/apps", headers={"Authorization": "Bearer wrong"}),
        await answer_bytes(client, "POST", "/v1/messages", json={"app": "plain"}),
        await answer_bytes(client, "GET", "/v1/messages/nope"),
        await answer_bytes(client, "DELETE", "/v1/messages"),
        await answer_bytes(client, "POST", "/wechat/callback/nope", data=b"<xml/>"),
        await answer_bytes(client, "GET", "/wechat/callback/plain", params={"echostr": "e"}),
    ]
    for app, query, body, expected in refused_callbacks():
        answer = await answer_bytes(
            client, "POST", f"/wechat/callback/{app}", params=query, data=body
        )
        assert answer.startswith((b"400", b"403")), answer[:200]
        assert not expected or expected.encode() not in answer  # no signing oracle
        answers.append(answer)
    for answer in answers:
        assert leaks(answer) == []


async def test_answers_about_apps_and_messages_hold_no_secret_or_token(
    client: Client, sent: list[tuple[str, str]]
) -> None:
    paths = ["/v1/apps", "/v1/messages?limit=500", "/openapi.json", "/readyz", "/healthz"]
    paths += [f"/v1/messages/{message_id}" for message_id, _ in sent]
    for path in paths:
        answer = await answer_bytes(
            client, "GET", path, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert answer.startswith(b"200"), answer[:200]
        assert leaks(answer) == [], path


# The label values every metric may carry: bounded sets, so a label can never hold an
# openid, a message id or a secret (STYLE.md, principle 12).
BOUNDED_LABELS: dict[str, Any] = {
    "app": {"plain", "safe", UNKNOWN_APP},
    "status": {str(s) for s in Status},
    "category": {c.value for c in Category},
    "kind": {k.value for k in MessageKind},  # wxgate_messages_by_kind, template syncs
    "outcome": {
        "accepted",
        "sent",
        "delivered",
        "rejected",
        "retry",
        "failed",
        "dead",
        "released",
        "release",
        "suppressed",
    },
    "endpoint": {"token", "stable_token", "stable_token_force"},
    "result": {
        "ok",
        "applied",
        "duplicate",
        "unknown_msgid",
        "forbidden",
        "replayed",
        "malformed",
        "unparseable",
        "ignored",
        "matched_by_recipient",
        "suppressed",
        "lifted",
        "failed",
    }
    | {c.value.lower() for c in Category},
    "reason": {"QUOTA", "CONFIG", REFUSED_OTHER} | set(REFUSAL_FIXES),  # pauses; refusals
    "route": {"messages", "batch"},
    "errcode": re.compile(r"-?[0-9]{1,6}|other|none"),
    "le": re.compile(r"[0-9.]+|\+Inf"),
}


async def test_metrics_hold_no_secret_token_openid_or_message_id(
    client: Client, deployment: Deployment, sent: list[tuple[str, str]]
) -> None:
    refused = refused_callbacks()[0]
    await answer_bytes(client, "POST", "/wechat/callback/plain", params=refused[1], data=refused[2])
    text = await answer_bytes(client, "GET", "/metrics")
    assert leaks(text) == []
    for message_id, openid in sent:
        assert message_id.encode() not in text and openid.encode() not in text
    labels = [
        (sample.name, name, value)
        for family in text_string_to_metric_families(text[text.index(b"# HELP") :].decode())
        for sample in family.samples
        for name, value in sample.labels.items()
    ]
    assert {"app", "status", "outcome"} <= {name for _, name, _ in labels}
    for metric, name, value in labels:
        allowed = BOUNDED_LABELS.get(name)
        assert allowed is not None, f"{metric}: unexpected label {name}"
        ok = allowed.fullmatch(value) if isinstance(allowed, re.Pattern) else value in allowed
        assert ok, f"{metric}{{{name}={value!r}}} is outside its bounded set"


async def test_the_gateways_log_holds_no_secret_and_no_token(
    client: Client, deployment: Deployment, sent: list[tuple[str, str]]
) -> None:
    async with client.http.get(f"{deployment.sandbox_url}/sandbox/stats") as reply:
        stats = orjson.loads(await reply.read())
    assert stats["token_fetches_total"] >= 1  # there was a token to leak
    logs = deployment.logs()
    gateway_log = logs["gateway.log"]
    assert b'"level": "debug"' in gateway_log  # the scan covers DEBUG lines too
    assert sent[0][0].encode() in gateway_log  # and lines about the sends
    for name, data in logs.items():
        assert leaks(data) == [], name
