"""Sandbox accounts: the defaults, the TOML file, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_MINI_APPID,
    DEFAULT_SECRET,
    SandboxAccount,
    load_accounts,
)
from wxgate.sandbox.errors import SandboxConfigError
from wxgate.sandbox.limits import per_day
from wxgate.sandbox.server import SandboxServer
from wxgate.wechat.kinds import AccountKind


def test_default_account_has_the_documented_credentials():
    account = SandboxAccount()
    assert (account.appid, account.secret) == ("wxsandbox000000001", "sandbox-secret")
    assert account.callback_token == "sandbox-token"
    assert account.encoding_aes_key == "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    assert account.original_id == "gh_sandbox000001"


def test_default_mini_program_has_the_documented_credentials():
    server = SandboxServer()
    mini = next(a for a in server.accounts if a.kind is AccountKind.MINIPROGRAM)
    assert (mini.appid, mini.secret) == ("wxsandboxmini00001", "sandbox-mini-secret")
    assert mini.callback_format == "xml"


def test_account_repr_shows_no_secret():
    shown = repr(SandboxAccount())
    assert DEFAULT_SECRET not in shown
    assert DEFAULT_ENCODING_AES_KEY not in shown
    assert "sandbox-token" not in shown


def test_accounts_file_is_read_in_order(tmp_path: Path):
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[accounts]]\nappid = "wxa"\nsecret = "sa"\ncallback_url = "http://127.0.0.1:1/cb"\n'
        '[[accounts]]\nappid = "wxb"\nsecret = "sb"\ncallback_mode = "safe"\n'
    )
    first, second = load_accounts(path)
    assert (first.appid, first.callback_url) == ("wxa", "http://127.0.0.1:1/cb")
    assert (second.appid, second.callback_mode) == ("wxb", "safe")


def test_accounts_file_can_declare_a_mini_program_pushed_json(tmp_path: Path):
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[accounts]]\nappid = "wxm"\nsecret = "sm"\nkind = "miniprogram"\n'
        'callback_format = "json"\n'
    )
    [mini] = load_accounts(path)
    assert mini.kind is AccountKind.MINIPROGRAM
    assert mini.callback_format == "json"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "[[accounts]]"),
        ('[[accounts]]\nappid = "wxa"\n', "appid and secret are required"),
        ('[[accounts]]\nappid = "wxa"\nsecret = "s"\ncolour = "red"\n', "unknown keys colour"),
        ('[[accounts]]\nappid = "wxa"\nsecret = 3\n', "secret must be strings"),
        ('[[accounts]]\nappid = "wxa"\nsecret = "s"\ncallback_mode = "x"\n', "callback_mode"),
        ('[[accounts]]\nappid = "wxa"\nsecret = "s"\nencoding_aes_key = "short"\n', "43"),
        ('[[accounts]]\nappid = "wxa"\nsecret = "s"\nkind = "channel"\n', "kind must be"),
        ('[[accounts]]\nappid = "wxa"\nsecret = "s"\ncallback_format = "json"\n', "mini"),
        ('[[accounts]]\nappid = "wxa"\nsecret = "s"\n' * 2, "appears twice"),
        ("accounts = [", "cannot read"),
    ],
)
def test_unusable_accounts_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, complaint: str
):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(SandboxConfigError) as refused:
        load_accounts(path)
    assert complaint in str(refused.value)


def test_default_accounts_are_kept_beside_configured_ones():
    server = SandboxServer(accounts=[SandboxAccount(appid="wxother", secret="s")])
    assert [a.appid for a in server.accounts] == [DEFAULT_APPID, DEFAULT_MINI_APPID, "wxother"]


def test_a_configured_account_replaces_the_default_of_its_appid():
    mine = SandboxAccount(appid=DEFAULT_MINI_APPID, secret="mine", kind=AccountKind.MINIPROGRAM)
    server = SandboxServer(accounts=[mine])
    assert [a.secret for a in server.accounts if a.appid == DEFAULT_MINI_APPID] == ["mine"]


def test_global_callback_url_goes_to_the_default_official_account():
    server = SandboxServer(callback_url="http://127.0.0.1:9/cb", callback_mode="safe")
    official, mini = server.accounts
    assert official.callback_url == "http://127.0.0.1:9/cb"
    assert official.callback_mode == "safe"
    assert mini.callback_url is None


def test_mini_program_callback_url_and_format_go_to_the_default_mini_program():
    server = SandboxServer(
        miniprogram_callback_url="http://127.0.0.1:9/mini", miniprogram_callback_format="json"
    )
    official, mini = server.accounts
    assert (mini.callback_url, mini.callback_format) == ("http://127.0.0.1:9/mini", "json")
    assert official.callback_url is None


def test_daily_counter_starts_again_at_midnight_beijing_time():
    counter = per_day()
    midnight_beijing = 1_700_006_400.0 - 8 * 3600  # 2023-11-15 00:00 +08:00
    assert counter.hit(midnight_beijing - 1, limit=1)
    assert not counter.hit(midnight_beijing - 0.5, limit=1)
    assert counter.hit(midnight_beijing, limit=1)
