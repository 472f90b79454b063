"""The per-recipient cap store and the dedupe window, on both engines (caps.py,
dedupe.py): what the frequency-cap check and intake's dedupe rely on."""

from __future__ import annotations

import asyncio

from tests.backends.conftest import OpenBackend
from wxgate.backends.base import Backend
from wxgate.backends.caps import CapLimit

T0 = 1_800_000_000.0
HOURLY = CapLimit("", 5, 3600.0)


async def test_a_recipient_gets_its_limit_of_slots_then_waits_for_the_oldest_to_free(
    backend: Backend,
) -> None:
    caps = backend.cap_store()
    for n in range(5):
        assert await caps.take("shop", "o-1", f"m{n}", [HOURLY], T0 + n) is None

    assert await caps.take("shop", "o-1", "m5", [HOURLY], T0 + 10) == T0 + 3600
    assert await caps.take("shop", "o-2", "m6", [HOURLY], T0 + 10) is None  # another user
    assert await caps.take("bank", "o-1", "m7", [HOURLY], T0 + 10) is None  # another app
    assert await caps.take("shop", "o-1", "m5", [HOURLY], T0 + 3600) is None  # m0's freed


async def test_a_message_that_holds_its_slot_passes_again_without_taking_another(
    backend: Backend,
) -> None:
    caps = backend.cap_store()
    one = CapLimit("", 1, 60.0)
    assert await caps.take("shop", "o-1", "m0", [one], T0) is None
    assert await caps.take("shop", "o-1", "m0", [one], T0 + 1) is None  # a retry of m0
    assert await caps.take("shop", "o-1", "m1", [one], T0 + 1) == T0 + 60


async def test_limits_are_taken_together_or_not_at_all(backend: Backend) -> None:
    caps = backend.cap_store()
    daily_template = CapLimit("tpl_promo", 1, 86400.0)
    assert await caps.take("shop", "o-1", "m0", [HOURLY, daily_template], T0) is None

    # The template's daily slot is used: nothing is taken from the hourly one either.
    assert await caps.take("shop", "o-1", "m1", [HOURLY, daily_template], T0 + 1) == T0 + 86400
    for n in range(2, 6):
        assert await caps.take("shop", "o-1", f"m{n}", [HOURLY], T0 + n) is None
    assert await caps.take("shop", "o-1", "m6", [HOURLY], T0 + 7) == T0 + 3600


async def test_concurrent_takes_never_hand_out_more_slots_than_the_limit(
    open_backend: OpenBackend,
) -> None:
    handles = [await open_backend() for _ in range(3)]
    answers = await asyncio.gather(
        *(handles[n % 3].cap_store().take("shop", "o-1", f"m{n}", [HOURLY], T0) for n in range(30))
    )
    assert sum(answer is None for answer in answers) == 5


async def test_the_dedupe_window_answers_the_first_id_until_it_ends(
    open_backend: OpenBackend,
) -> None:
    first, second = (await open_backend()).dedupe_store(), (await open_backend()).dedupe_store()
    assert await first.claim("shop", "d1", "m0", 60.0, T0) is None
    assert await second.claim("shop", "d1", "m1", 60.0, T0 + 1) == "m0"
    assert await second.claim("shop", "d2", "m2", 60.0, T0 + 1) is None
    assert await second.claim("bank", "d1", "m3", 60.0, T0 + 1) is None
    assert await second.claim("shop", "d1", "m4", 60.0, T0 + 60) is None  # the window ended
    assert await first.claim("shop", "d1", "m5", 60.0, T0 + 61) == "m4"


async def test_a_forgotten_claim_lets_the_next_message_be_first(backend: Backend) -> None:
    store = backend.dedupe_store()
    assert await store.claim("shop", "d1", "m0", 60.0, T0) is None
    await store.forget("shop", "d1", "other")  # not its claim: kept
    assert await store.claim("shop", "d1", "m1", 60.0, T0) == "m0"
    await store.forget("shop", "d1", "m0")
    assert await store.claim("shop", "d1", "m1", 60.0, T0) is None
