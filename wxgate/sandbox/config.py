"""The sandbox's accounts: the two defaults every tool can rely on, and more from TOML.

A `SandboxAccount` is what the console of a real account would hold: its kind
(official account or mini program), AppID, AppSecret, the callback Token and
EncodingAESKey, the original id, where callbacks go and in which format.
`load_accounts` reads `[[accounts]]` tables from a file.

Default official account: appid `wxsandbox000000001`, secret `sandbox-secret`.
Default mini program: appid `wxsandboxmini00001`, secret `sandbox-mini-secret`.
Both use callback token `sandbox-token` and the EncodingAESKey below.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from wxgate.sandbox.errors import SandboxConfigError
from wxgate.wechat.kinds import AccountKind

DEFAULT_APPID = "wxsandbox000000001"
DEFAULT_SECRET = "sandbox-secret"
DEFAULT_CALLBACK_TOKEN = "sandbox-token"
DEFAULT_ENCODING_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
DEFAULT_ORIGINAL_ID = "gh_sandbox000001"
DEFAULT_MINI_APPID = "wxsandboxmini00001"
DEFAULT_MINI_SECRET = "sandbox-mini-secret"
DEFAULT_MINI_ORIGINAL_ID = "gh_sandboxmini01"
DEFAULT_PORT = 8081
DEFAULT_TOKEN_TTL_S = 7200

CallbackMode = Literal["plain", "safe"]
CALLBACK_MODES: tuple[str, ...] = ("plain", "safe")
# Official accounts are pushed XML; a mini program chooses XML or JSON in its console.
CallbackFormat = Literal["xml", "json"]
CALLBACK_FORMATS: tuple[str, ...] = ("xml", "json")
ACCOUNT_KINDS: tuple[str, ...] = tuple(AccountKind)


@dataclass(frozen=True, slots=True)
class SandboxAccount:
    """One simulated official account or mini program."""

    appid: str = DEFAULT_APPID
    secret: str = DEFAULT_SECRET
    callback_token: str = DEFAULT_CALLBACK_TOKEN
    encoding_aes_key: str = DEFAULT_ENCODING_AES_KEY
    original_id: str = DEFAULT_ORIGINAL_ID
    callback_url: str | None = None
    callback_mode: CallbackMode = "plain"
    kind: AccountKind = AccountKind.OFFICIAL_ACCOUNT
    callback_format: CallbackFormat = "xml"

    def __post_init__(self) -> None:
        if not self.appid or not self.secret:
            raise SandboxConfigError("an account needs a non-empty appid and secret")
        _one_of(self.appid, "callback_mode", self.callback_mode, CALLBACK_MODES)
        _one_of(self.appid, "kind", self.kind, ACCOUNT_KINDS)
        _one_of(self.appid, "callback_format", self.callback_format, CALLBACK_FORMATS)
        object.__setattr__(self, "kind", AccountKind(self.kind))
        if self.callback_format == "json" and self.kind is not AccountKind.MINIPROGRAM:
            raise SandboxConfigError(
                f"account {self.appid}: callback_format json is for mini programs only"
            )
        if len(self.encoding_aes_key) != 43:
            raise SandboxConfigError(f"account {self.appid}: encoding_aes_key must be 43 chars")

    def __repr__(self) -> str:
        # Keeps the secret, token and key out of any repr that reaches a log or a traceback.
        return (
            f"SandboxAccount(appid={self.appid!r}, kind={self.kind.value!r}, "
            f"callback_mode={self.callback_mode!r})"
        )


def _one_of(appid: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SandboxConfigError(f"account {appid}: {name} must be one of {', '.join(allowed)}")


def default_account(
    callback_url: str | None = None, callback_mode: CallbackMode = "plain"
) -> SandboxAccount:
    return SandboxAccount(callback_url=callback_url, callback_mode=callback_mode)


def default_miniprogram(
    callback_url: str | None = None,
    callback_mode: CallbackMode = "plain",
    callback_format: CallbackFormat = "xml",
) -> SandboxAccount:
    return SandboxAccount(
        appid=DEFAULT_MINI_APPID,
        secret=DEFAULT_MINI_SECRET,
        original_id=DEFAULT_MINI_ORIGINAL_ID,
        callback_url=callback_url,
        callback_mode=callback_mode,
        kind=AccountKind.MINIPROGRAM,
        callback_format=callback_format,
    )


_FIELDS = frozenset(f.name for f in fields(SandboxAccount))


def _account(index: int, table: Any) -> SandboxAccount:
    if not isinstance(table, dict):
        raise SandboxConfigError(f"accounts[{index}] must be a table")
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise SandboxConfigError(f"accounts[{index}]: unknown keys {', '.join(unknown)}")
    wrong = sorted(k for k, v in table.items() if not isinstance(v, str))
    if wrong:
        raise SandboxConfigError(f"accounts[{index}]: {', '.join(wrong)} must be strings")
    if "appid" not in table or "secret" not in table:
        raise SandboxConfigError(f"accounts[{index}]: appid and secret are required")
    return SandboxAccount(**table)


def load_accounts(path: Path) -> list[SandboxAccount]:
    """The `[[accounts]]` of a TOML file, in order; raises SandboxConfigError when unusable."""
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SandboxConfigError(f"cannot read {path}: {exc}") from exc
    tables = document.get("accounts", [])
    if not isinstance(tables, list) or not tables:
        raise SandboxConfigError(f"{path}: expected one or more [[accounts]] tables")
    accounts = [_account(i, table) for i, table in enumerate(tables)]
    appids = [a.appid for a in accounts]
    if len(set(appids)) != len(appids):
        raise SandboxConfigError(f"{path}: an appid appears twice")
    return accounts
