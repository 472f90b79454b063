"""The suppression list's store, on both engines (the `backend` fixture)."""

from __future__ import annotations

from wxgate.backends.base import Backend
from wxgate.backends.suppressions import LIFTED_BY_FOLLOW, Suppression, SuppressionReason

from .conftest import OpenBackend

R = SuppressionReason


def _entry(openid: str, reason: R = R.NOT_FOLLOWING, errcode: int | None = 43004) -> Suppression:
    return Suppression(openid, reason, 1_700_000_000.0, errcode)


async def test_an_added_recipient_is_found_with_its_reason(backend: Backend) -> None:
    store = backend.suppression_store()
    assert await store.add("shop", [_entry("o1"), _entry("o2", R.USER_BLOCK, None)]) == 2
    found = await store.find("shop", ["o1", "o2", "o3"])
    assert found == {"o1": _entry("o1"), "o2": _entry("o2", R.USER_BLOCK, None)}
    assert await store.find("other", ["o1"]) == {}


async def test_adding_again_takes_the_new_reason_and_counts_nothing_new(backend: Backend) -> None:
    store = backend.suppression_store()
    await store.add("shop", [_entry("o1")])
    assert await store.add("shop", [_entry("o1", R.UNFOLLOWED, None)]) == 0
    assert (await store.find("shop", ["o1"]))["o1"].reason is R.UNFOLLOWED


async def test_a_permanent_entry_is_not_overwritten(backend: Backend) -> None:
    store = backend.suppression_store()
    await store.add("shop", [_entry("bad", R.INVALID_OPENID, 40003)])
    await store.add("shop", [_entry("bad", R.UNFOLLOWED, None)])
    assert (await store.find("shop", ["bad"]))["bad"].reason is R.INVALID_OPENID


async def test_a_follow_lifts_what_the_user_can_undo_but_not_an_invalid_openid(
    backend: Backend,
) -> None:
    store = backend.suppression_store()
    await store.add("shop", [_entry("o1"), _entry("bad", R.INVALID_OPENID, 40003)])
    assert await store.lift("shop", "o1", LIFTED_BY_FOLLOW)
    assert not await store.lift("shop", "bad", LIFTED_BY_FOLLOW)
    assert not await store.lift("shop", "o1", LIFTED_BY_FOLLOW)
    assert await store.find("shop", ["o1", "bad"]) == {
        "bad": _entry("bad", R.INVALID_OPENID, 40003)
    }
    assert await store.lift("shop", "bad")  # an operator lifts anything


async def test_pages_list_every_entry_once(backend: Backend) -> None:
    store = backend.suppression_store()
    openids = [f"o{i:03d}" for i in range(25)]
    await store.add("shop", [_entry(openid) for openid in openids])
    await store.add("other", [_entry("elsewhere")])
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = await store.page("shop", 7, cursor)
        assert len(page.items) <= 7
        seen += [item.openid for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == openids


async def test_an_import_of_many_is_found_whole(backend: Backend) -> None:
    store = backend.suppression_store()
    entries = [_entry(f"imp{i}", R.OPERATOR, None) for i in range(2_500)]
    assert await store.add("shop", entries) == 2_500
    found = await store.find("shop", [entry.openid for entry in entries])
    assert len(found) == 2_500


async def test_every_handle_on_one_store_sees_one_list(open_backend: OpenBackend) -> None:
    first, second = await open_backend(), await open_backend()
    await first.suppression_store().add("shop", [_entry("o1")])
    assert "o1" in await second.suppression_store().find("shop", ["o1"])
