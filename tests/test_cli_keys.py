"""`wxgate keys new/list/revoke` and `wxgate audit` on a real SQLite file: a stored key is
shown once, listed without its hash, revoked, and each change is in the audit log."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_cli import invoke, write_config
from wxgate.config import hash_api_key


def test_a_stored_key_is_made_listed_revoked_and_audited(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "wxgate.toml", tmp_path / "wxgate.db"))

    made = invoke(
        "keys", "new", "--name", "billing", "--apps", "shop", "--scopes", "send,read",
        "--config", config,
    )  # fmt: skip

    assert made.exit_code == 0, made.output
    [key] = re.findall(r"wxg_[A-Za-z0-9_-]{40,}", made.stdout)
    [key_id] = re.findall(r"id (k_[0-9a-f]+)", made.stdout)
    assert "apps shop, scopes send,read" in made.stdout
    listed = invoke("keys", "list", "--config", config)
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.stdout and "billing" in listed.stdout and "send,read" in listed.stdout
    assert hash_api_key(key) not in listed.stdout and "sha256" not in listed.stdout
    assert key not in listed.stdout

    revoked = invoke("keys", "revoke", key_id, "--config", config)
    assert revoked.exit_code == 0, revoked.output
    assert invoke("keys", "revoke", key_id, "--config", config).exit_code == 1

    audit = invoke("audit", "--config", config)
    assert audit.exit_code == 0, audit.output
    assert "key.revoke" in audit.stdout and "key.new" in audit.stdout
    assert audit.stdout.index("key.revoke") < audit.stdout.index("key.new")  # newest first


def test_an_unknown_scope_or_app_is_refused(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "wxgate.toml", tmp_path / "wxgate.db"))
    bad_scope = invoke("keys", "new", "--name", "x", "--scopes", "root", "--config", config)
    bad_app = invoke("keys", "new", "--name", "x", "--apps", "nope", "--config", config)
    assert bad_scope.exit_code == 2 and "scopes must be some of" in bad_scope.output
    assert bad_app.exit_code == 2 and "no such app(s): nope" in bad_app.output


def test_replays_and_resumes_on_the_command_line_are_audited(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "wxgate.toml", tmp_path / "wxgate.db"))
    assert invoke("dlq", "replay", "--all", "--config", config).exit_code == 0
    assert invoke("apps", "resume", "shop", "--config", config).exit_code == 0

    audit = invoke("audit", "--config", config)

    assert audit.exit_code == 0, audit.output
    assert "resume" in audit.stdout and "was not paused" in audit.stdout
    assert "replay" in audit.stdout and "0 replayed" in audit.stdout
    assert "cli:" in audit.stdout


def test_suppression_changes_on_the_command_line_are_audited(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "wxgate.toml", tmp_path / "wxgate.db"))
    assert invoke("suppressions", "add", "oQuiet", "--config", config).exit_code == 0
    assert invoke("suppressions", "lift", "oQuiet", "--config", config).exit_code == 0

    audit = invoke("audit", "--config", config)

    assert audit.exit_code == 0, audit.output
    assert "suppression.lift" in audit.stdout and "shop oQuiet" in audit.stdout
    assert "suppression.add" in audit.stdout and "1 added, reason operator" in audit.stdout
