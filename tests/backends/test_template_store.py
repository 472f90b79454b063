"""The template registry's store, on both engines (the `backend` fixture)."""

from __future__ import annotations

from wxgate.backends.base import Backend
from wxgate.backends.templates import RegisteredTemplate
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template_content import TemplateKey, template_keys

from .conftest import OpenBackend

CONTENT = "{{thing1.DATA}} {{amount2.DATA}} {{keyword1.DATA}}"


def _template(template_id: str, kind: MessageKind = MessageKind.TEMPLATE) -> RegisteredTemplate:
    return RegisteredTemplate(template_id, kind, "Order", CONTENT, tuple(template_keys(CONTENT)))


async def test_a_replace_stores_the_templates_with_their_keys(backend: Backend) -> None:
    store = backend.template_store()
    enum_key = TemplateKey("enum1", "enum", ("a", "b"))
    with_enum = RegisteredTemplate("s1", MessageKind.SUBSCRIBE, "t", "{{enum1.DATA}}", (enum_key,))
    await store.replace("shop", MessageKind.TEMPLATE, [_template("t2"), _template("t1")], 100.0)
    await store.replace("shop", MessageKind.SUBSCRIBE, [with_enum], 100.0)
    stored = await store.templates("shop")
    assert [t.template_id for t in stored] == ["s1", "t1", "t2"]
    assert stored[0] == with_enum
    assert stored[1].keys == (
        TemplateKey("thing1", "thing"),
        TemplateKey("amount2", "amount"),
        TemplateKey("keyword1", None),
    )
    assert await store.templates("other") == []


async def test_a_replace_drops_the_kinds_templates_no_longer_listed(backend: Backend) -> None:
    store = backend.template_store()
    await store.replace("shop", MessageKind.TEMPLATE, [_template("t1"), _template("t2")], 100.0)
    await store.replace("shop", MessageKind.SUBSCRIBE, [_template("s1", MessageKind.SUBSCRIBE)], 1)
    await store.replace("shop", MessageKind.TEMPLATE, [_template("t3")], 200.0)
    assert [t.template_id for t in await store.templates("shop")] == ["s1", "t3"]
    await store.replace("shop", MessageKind.TEMPLATE, [], 300.0)
    assert [t.template_id for t in await store.templates("shop")] == ["s1"]


async def test_the_sync_state_says_when_the_last_sync_succeeded(backend: Backend) -> None:
    store = backend.template_store()
    assert await store.sync_states("shop") == {}
    await store.replace("shop", MessageKind.TEMPLATE, [_template("t1")], 100.0)
    state = (await store.sync_states("shop"))[MessageKind.TEMPLATE]
    assert (state.ok_at, state.attempt_at, state.error, state.count) == (100.0, 100.0, "", 1)
    assert state.last_ok


async def test_a_failed_sync_keeps_the_templates_and_the_last_success(backend: Backend) -> None:
    store = backend.template_store()
    await store.sync_failed("shop", MessageKind.TEMPLATE, "45009 api freq out of limit", 50.0)
    state = (await store.sync_states("shop"))[MessageKind.TEMPLATE]
    assert (state.ok_at, state.last_ok) == (None, False)
    await store.replace("shop", MessageKind.TEMPLATE, [_template("t1")], 100.0)
    await store.sync_failed("shop", MessageKind.TEMPLATE, "timeout", 200.0)
    state = (await store.sync_states("shop"))[MessageKind.TEMPLATE]
    assert (state.ok_at, state.attempt_at, state.error, state.count) == (100.0, 200.0, "timeout", 1)
    assert not state.last_ok
    assert [t.template_id for t in await store.templates("shop")] == ["t1"]


async def test_every_handle_on_one_store_sees_one_registry(open_backend: OpenBackend) -> None:
    first, second = await open_backend(), await open_backend()
    await first.template_store().replace("shop", MessageKind.TEMPLATE, [_template("t1")], 1.0)
    assert [t.template_id for t in await second.template_store().templates("shop")] == ["t1"]
