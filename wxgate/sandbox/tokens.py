"""Access tokens as WeChat issues and checks them (docs/wechat-protocol.md §1, §9 items 1-3).

Two separate namespaces per account: the classic `/cgi-bin/token` (every fetch
mints a new token; the one it replaces keeps working for 300 s) and
`/cgi-bin/stable_token` (the same token until under 300 s remain; a forced
refresh replaces it at once). Neither endpoint touches the other's tokens.
Pure logic: time is passed in.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

from wxgate.sandbox.answers import STABLE_TOKEN_HINT, Answer
from wxgate.sandbox.limits import (
    FORCE_REFRESH_MIN_INTERVAL_S,
    FORCE_REFRESH_PER_DAY,
    STABLE_ROTATE_BELOW_S,
    TOKEN_GRACE_S,
    WindowCounter,
    per_day,
)

ACCESS_TOKEN_MISSING = 41001
INVALID_ACCESS_TOKEN = 40014
NOT_LATEST = 40001
EXPIRED = 42001


def mint_token() -> str:
    """A token shaped like WeChat's: a numeric prefix, `_`, then ~150 URL-safe characters."""
    return "90_" + secrets.token_urlsafe(112)


@dataclass(slots=True)
class Grant:
    """One issued token: whose it is and until when it works."""

    appid: str
    expires_at: float
    invalid_after: float = math.inf  # the end of its grace once another token replaced it


@dataclass(slots=True)
class AccountTokens:
    """The current token of each namespace of one account, and its force-refresh budget."""

    classic: str | None = None
    stable: str | None = None
    last_force_at: float = -math.inf
    forces: WindowCounter = field(default_factory=per_day)


class TokenRegistry:
    """Every token issued so far, and the rules that issue and check them."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.grants: dict[str, Grant] = {}

    def check(self, token: str | None, now: float) -> Grant:
        """The grant behind `token`, or an Answer: 41001, 40014, 40001 or 42001."""
        if not token:
            raise Answer(ACCESS_TOKEN_MISSING)
        grant = self.grants.get(token)
        if grant is None:
            raise Answer(INVALID_ACCESS_TOKEN)
        if now >= grant.invalid_after:
            raise Answer(NOT_LATEST, STABLE_TOKEN_HINT)
        if now >= grant.expires_at:
            raise Answer(EXPIRED)
        return grant

    def fetch_classic(self, appid: str, tokens: AccountTokens, now: float) -> tuple[str, int]:
        """A new token every call; the previous one keeps working for the grace period."""
        tokens.classic = self._rotate(appid, tokens.classic, now, TOKEN_GRACE_S)
        return tokens.classic, int(self.ttl_s)

    def fetch_stable(
        self, appid: str, tokens: AccountTokens, now: float, force: bool
    ) -> tuple[str, int]:
        """The current stable token with its remaining lifetime, rotated when due or forced."""
        if force and self._may_force(tokens, now):
            tokens.stable = self._rotate(appid, tokens.stable, now, 0.0)
            return tokens.stable, int(self.ttl_s)
        current = tokens.stable
        if current is not None:
            grant = self.grants[current]
            remaining = grant.expires_at - now
            if now < grant.invalid_after and remaining >= STABLE_ROTATE_BELOW_S:
                return current, int(remaining)
        tokens.stable = self._rotate(appid, current, now, TOKEN_GRACE_S)
        return tokens.stable, int(self.ttl_s)

    def expire_all(self, now: float) -> None:
        """Every token issued so far stops working now (42001 on its next use)."""
        for grant in self.grants.values():
            grant.expires_at = min(grant.expires_at, now)

    def _may_force(self, tokens: AccountTokens, now: float) -> bool:
        # At most 20 forced refreshes a day, at least 30 s apart; otherwise no refresh happens.
        if now - tokens.last_force_at < FORCE_REFRESH_MIN_INTERVAL_S:
            return False
        if not tokens.forces.hit(now, FORCE_REFRESH_PER_DAY):
            return False
        tokens.last_force_at = now
        return True

    def _rotate(self, appid: str, previous: str | None, now: float, grace_s: float) -> str:
        if previous is not None:
            old = self.grants[previous]
            old.invalid_after = min(old.invalid_after, now + grace_s)
        token = mint_token()
        self.grants[token] = Grant(appid, now + self.ttl_s)
        return token
