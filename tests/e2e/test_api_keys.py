"""Scoped API keys and the audit log over real HTTP, on both engines: a key stored by
another process is honoured within its apps and scopes (403 naming what is missing),
a revocation reaches the gateway within a second, and operator actions land in the
audit log with the key's name."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.e2e.conftest import APP, TEMPLATE, Stack, eventually, order_data
from tests.e2e.engines import engine_stack  # noqa: F401  # `stack`, on both engines
from wxgate.backends.base import Backend
from wxgate.clock import SystemClock
from wxgate.gateway import make_backend
from wxgate.keyring import make_key, revoke_key


@asynccontextmanager
async def another_process(stack: Stack) -> AsyncIterator[Backend]:
    """A handle of its own on the gateway's storage, as `wxgate keys` would open."""
    assert stack.settings is not None
    backend = make_backend(stack.settings, SystemClock())
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def new_key(stack: Stack, apps: tuple[str, ...], scopes: tuple[str, ...]) -> tuple[str, str]:
    async with another_process(stack) as backend:
        made = await make_key(
            backend,
            name="billing",
            apps=apps,
            scopes=scopes,
            known_apps=[APP, "bank"],
            actor="cli:test",
            now=time.time(),
        )
    return made.key, made.stored.id


def body() -> dict[str, object]:
    return {"touser": "oKeyed_e2e", "template_id": TEMPLATE, "data": order_data()}


async def test_a_key_sends_and_reads_within_its_app_and_scopes(stack: Stack) -> None:
    key, _ = await new_key(stack, (APP,), ("send", "read"))

    status, answer = await stack.call("POST", "/v1/messages", json=body(), key=key)

    assert status == 202, answer
    status, _ = await stack.call("GET", f"/v1/messages/{answer['data']['id']}", key=key)
    assert status == 200


async def test_a_key_for_another_app_gets_403_naming_the_app(stack: Stack) -> None:
    key, _ = await new_key(stack, ("bank",), ("send", "read"))

    status, answer = await stack.call("POST", "/v1/messages", json=body(), key=key)

    assert status == 403, answer
    assert answer["msg"] == f"this key (billing) may not use app {APP!r}"
    assert answer["data"]["app"] == APP
    message_id = await stack.send("oOther_e2e")  # the config key may
    status, answer = await stack.call("GET", f"/v1/messages/{message_id}", key=key)
    assert status == 403 and answer["data"]["app"] == APP


async def test_replay_without_operate_is_403_naming_the_scope(stack: Stack) -> None:
    key, _ = await new_key(stack, (APP,), ("send", "read"))
    message_id = await stack.send("invalid_grace")
    await stack.settled([message_id], {"failed"})

    status, answer = await stack.call("POST", f"/v1/messages/{message_id}/replay", key=key)

    assert status == 403, answer
    assert answer["msg"] == "this key (billing) lacks the scope 'operate'"
    assert answer["data"] == {"missing_scope": "operate"}
    for method, path in (("DELETE", f"/v1/messages/{message_id}"), ("GET", "/v1/audit")):
        status, answer = await stack.call(method, path, key=key)
        assert status == 403, (method, path, answer)


async def test_a_key_revoked_by_another_process_is_refused_within_a_second(
    stack: Stack,
) -> None:
    key, key_id = await new_key(stack, (), ("read",))
    assert (await stack.call("GET", "/v1/apps", key=key))[0] == 200

    async with another_process(stack) as backend:
        assert await revoke_key(backend, key_id, actor="cli:test", now=time.time()) is not None
    revoked_at = time.monotonic()

    async def refused() -> bool:
        return (await stack.call("GET", "/v1/apps", key=key))[0] == 401

    await eventually(refused, timeout_s=1.0, what="the revoked key refused")
    assert time.monotonic() - revoked_at < 1.0


async def test_the_audit_log_holds_each_operator_action_with_the_key_name(stack: Stack) -> None:
    key, key_id = await new_key(stack, (APP,), ("send", "read", "operate"))
    failed = await stack.send("invalid_grace")
    await stack.settled([failed], {"failed"})
    status, _ = await stack.call("POST", f"/v1/messages/{failed}/replay", key=key)
    assert status == 200
    later = {**body(), "send_at": "2099-01-01T00:00:00Z"}
    status, answer = await stack.call("POST", "/v1/messages", json=later)
    assert status == 400  # more than a year ahead
    scheduled = {**body(), "send_at": "2000-01-01T00:00:00Z"}
    _, answer = await stack.call("POST", "/v1/messages", json=scheduled)
    await stack.call("DELETE", f"/v1/messages/{answer['data']['id']}", key=key)
    assert (await stack.call("POST", f"/v1/apps/{APP}/resume", key=key))[0] == 200
    async with another_process(stack) as backend:
        await revoke_key(backend, key_id, actor="cli:test", now=time.time())

    status, answer = await stack.call("GET", "/v1/audit")

    assert status == 200, answer
    seen = [(e["actor"], e["action"], e["target"]) for e in answer["data"]["items"]]
    assert seen[0] == ("cli:test", "key.revoke", key_id)
    assert ("billing", "resume", APP) in seen
    assert ("billing", "replay", failed) in seen
    assert any(actor == "billing" and action == "cancel" for actor, action, _ in seen)
    assert seen[-1] == ("cli:test", "key.new", key_id)
    assert all(e["at"].endswith("Z") for e in answer["data"]["items"])


async def test_two_keys_of_one_name_overlap_during_a_rotation(stack: Stack) -> None:
    old, old_id = await new_key(stack, (APP,), ("read",))
    new, _ = await new_key(stack, (APP,), ("read",))
    assert (await stack.call("GET", "/v1/apps", key=old))[0] == 200
    assert (await stack.call("GET", "/v1/apps", key=new))[0] == 200

    async with another_process(stack) as backend:
        await revoke_key(backend, old_id, actor="cli:test", now=time.time())

    async def old_refused() -> bool:
        return (await stack.call("GET", "/v1/apps", key=old))[0] == 401

    await eventually(old_refused, timeout_s=1.0, what="the old key refused")
    assert (await stack.call("GET", "/v1/apps", key=new))[0] == 200


async def test_suppression_changes_are_audited_and_held_to_the_key_apps(stack: Stack) -> None:
    key, _ = await new_key(stack, (APP,), ("read", "operate"))
    other, _ = await new_key(stack, ("bank",), ("read", "operate"))
    added = {"app": APP, "openids": ["oQuiet_e2e", "oQuiet2_e2e"]}

    status, answer = await stack.call("POST", "/v1/suppressions", json=added, key=key)
    assert status == 200, answer
    status, answer = await stack.call("DELETE", f"/v1/suppressions/{APP}/oQuiet_e2e", key=key)
    assert status == 200, answer
    status, answer = await stack.call("POST", "/v1/suppressions", json=added, key=other)
    assert status == 403 and answer["data"]["app"] == APP

    _, answer = await stack.call("GET", "/v1/audit")
    seen = [(e["actor"], e["action"], e["target"]) for e in answer["data"]["items"]]
    assert seen[:2] == [
        ("billing", "suppression.lift", f"{APP} oQuiet_e2e"),
        ("billing", "suppression.add", APP),
    ]
