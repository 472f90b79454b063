"""Stored API keys and the audit log, on both engines (api_keys.py, audit.py)."""

from __future__ import annotations

from tests.backends.conftest import OpenBackend
from wxgate.backends.api_keys import StoredKey
from wxgate.backends.audit import AuditEntry
from wxgate.backends.base import Backend

T0 = 1_800_000_000.0


def stored(key_id: str = "k1", name: str = "billing", digest: str = "sha256:aa") -> StoredKey:
    return StoredKey(key_id, name, digest, ("shop",), ("send", "read"), T0)


async def test_a_key_added_by_one_handle_is_found_by_its_digest_in_another(
    open_backend: OpenBackend,
) -> None:
    first, second = await open_backend(), await open_backend()
    await first.api_key_store().add(stored())

    found = await second.api_key_store().find("sha256:aa")

    assert found == stored()
    assert await second.api_key_store().find("sha256:bb") is None


async def test_a_revoked_key_is_no_longer_found_but_still_listed(
    open_backend: OpenBackend,
) -> None:
    first, second = await open_backend(), await open_backend()
    await first.api_key_store().add(stored())
    await first.api_key_store().add(stored("k2", digest="sha256:cc"))  # a rotation's new key

    revoked = await second.api_key_store().revoke("k1", T0 + 5)

    assert revoked is not None and revoked.revoked_at == T0 + 5
    assert await first.api_key_store().find("sha256:aa") is None
    assert await first.api_key_store().find("sha256:cc") is not None
    assert await first.api_key_store().revoke("k1", T0 + 6) is None  # already revoked
    assert await first.api_key_store().revoke("nope", T0 + 6) is None
    listed = await first.api_key_store().keys()
    assert [(k.id, k.revoked_at) for k in listed] == [("k1", T0 + 5), ("k2", None)]


async def test_use_is_recorded_as_last_used(backend: Backend) -> None:
    store = backend.api_key_store()
    await store.add(stored())
    await store.touch("k1", T0 + 60)
    [key] = await store.keys()
    assert key.last_used_at == T0 + 60


async def test_the_audit_log_reads_newest_first_and_by_action(backend: Backend) -> None:
    log = backend.audit_log()
    for n, action in enumerate(["replay", "cancel", "replay", "key.revoke"]):
        await log.record(AuditEntry(T0 + n, "ops", action, f"target-{n}", f"detail {n}"))

    newest = await log.entries(3)
    replays = await log.entries(10, action="replay")

    assert [e.target for e in newest] == ["target-3", "target-2", "target-1"]
    assert [e.target for e in replays] == ["target-2", "target-0"]
    assert replays[0] == AuditEntry(T0 + 2, "ops", "replay", "target-2", "detail 2")
