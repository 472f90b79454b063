"""Making, listing and revoking the API keys kept in storage (backends/api_keys.py),
each change written to the audit log; used by `wxgate keys` (and any other operator
face). A key is shown once, when made: storage keeps only its SHA-256.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from wxgate.backends.api_keys import SCOPES, StoredKey
from wxgate.backends.audit import AuditEntry
from wxgate.backends.base import Backend
from wxgate.config import hash_api_key

KEY_PREFIX = "wxg_"


class KeyRequestError(ValueError):
    """A key asked for with an unknown scope or app, or without a name."""


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class MadeKey:
    key: str  # the key itself: shown once, stored nowhere
    stored: StoredKey


def _checked(
    name: str, apps: Sequence[str], scopes: Sequence[str], known_apps: Sequence[str]
) -> None:
    if not name.strip():
        raise KeyRequestError("a key needs a name (who uses it)")
    unknown_scopes = sorted(set(scopes) - set(SCOPES))
    if unknown_scopes or not scopes:
        raise KeyRequestError(
            f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})"
        )
    unknown_apps = sorted(set(apps) - set(known_apps))
    if unknown_apps:
        raise KeyRequestError(f"no such app(s): {', '.join(unknown_apps)}")


async def make_key(
    backend: Backend,
    *,
    name: str,
    apps: Sequence[str],
    scopes: Sequence[str],
    known_apps: Sequence[str],
    actor: str,
    now: float,
) -> MadeKey:
    """A new key for `apps` (empty: every app) with `scopes`, stored and audited."""
    _checked(name, apps, scopes, known_apps)
    key = new_api_key()
    ordered_scopes = tuple(scope for scope in SCOPES if scope in scopes)
    stored = StoredKey(
        "k_" + secrets.token_hex(6), name, hash_api_key(key), tuple(apps), ordered_scopes, now
    )
    await backend.api_key_store().add(stored)
    detail = f"apps={','.join(apps) or '*'} scopes={','.join(ordered_scopes)}"
    await backend.audit_log().record(AuditEntry(now, actor, "key.new", stored.id, detail))
    return MadeKey(key, stored)


async def revoke_key(backend: Backend, key_id: str, *, actor: str, now: float) -> StoredKey | None:
    """Revoke a live key, audited; None when no live key has that id."""
    revoked = await backend.api_key_store().revoke(key_id, now)
    if revoked is not None:
        entry = AuditEntry(now, actor, "key.revoke", key_id, f"name={revoked.name}")
        await backend.audit_log().record(entry)
    return revoked
