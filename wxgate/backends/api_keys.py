"""API keys kept in storage: a name, the apps and scopes a key may use, and its use.

Keys made with `wxgate keys new` live here (the config file's hashes are read apart,
by api/auth.py), so every process of a gateway sees a new key, or a revocation, on
its next look-up. Only the key's SHA-256 is stored ("sha256:<hex>", as in the
config). Both engines implement `ApiKeyStore` (sqlite_api_keys.py,
redis_api_keys.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

# What a key may do: send messages, read them, operate (replay, resume, cancel,
# suppressions), administer keys and read the audit log.
SCOPES: Final = ("send", "read", "operate", "admin")


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str  # names the key in `keys list` and `keys revoke`; not secret
    name: str  # who uses it (e.g. "billing"); two keys may share it during a rotation
    digest: str  # "sha256:<hex>" of the key
    apps: tuple[str, ...]  # the apps it may use; empty: every app
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None


class ApiKeyStore(Protocol):
    async def add(self, key: StoredKey) -> None: ...

    async def find(self, digest: str) -> StoredKey | None:
        """The live (not revoked) key with this digest, or None."""
        ...

    async def touch(self, key_id: str, now: float) -> None:
        """Record a use of the key (its `last_used_at`)."""
        ...

    async def keys(self) -> list[StoredKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def revoke(self, key_id: str, now: float) -> StoredKey | None:
        """Revoke a live key; the key as revoked, or None when no live key has that id."""
        ...
