"""`wxgate webhooks`: a fresh secret the Standard Webhooks library takes, and list and
replay of dead events in a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from wxgate.backends.base import NewMessage, Status, Verdict
from wxgate.backends.sqlite import SqliteBackend
from wxgate.backends.webhook_outbox import HookOutcome, HookResult
from wxgate.cli import app as cli
from wxgate.delivery.webhook_signing import new_secret


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.output


def test_secret_prints_a_fresh_whsec_the_library_accepts() -> None:
    code, first = invoke("webhooks", "secret")
    _, second = invoke("webhooks", "secret")
    assert code == 0 and first.startswith("whsec_") and first != second
    signature = Webhook(first.strip()).sign("msg_1", datetime.now(UTC), b"{}")
    assert signature.startswith("v1,")


async def _one_dead_event(db: Path) -> str:
    backend = SqliteBackend(db)
    await backend.start()
    try:
        decided = Verdict(Status.FAILED, "test", 40003, "invalid openid")
        message = replace(NewMessage("shop", {"touser": "o-1"}), notify=True, verdict=decided)
        await backend.enqueue([message], time.time())
        outbox = backend.webhook_outbox()
        [claim] = await outbox.claim(["shop"], 10, 30, time.time())
        await outbox.finish([HookResult(claim, HookOutcome.DEAD, error="HTTP 410")], time.time())
        return claim.webhook_id
    finally:
        await backend.close()


def test_list_shows_the_dead_event_and_replay_moves_it_back(tmp_path: Path) -> None:
    db = tmp_path / "hooks.db"
    config = tmp_path / "wxgate.toml"
    config.write_text(
        f'[storage]\nsqlite_path = "{db}"\n\n[apps.shop]\nappid = "wx1"\nsecret = "s"\n'
        f'webhook_url = "https://hooks.example.com/in"\nwebhook_secret = "{new_secret()}"\n'
    )
    webhook_id = asyncio.run(_one_dead_event(db))

    code, listed = invoke("webhooks", "list", "--config", str(config))
    assert code == 0, listed
    assert webhook_id in listed and "HTTP 410" in listed and "1 dead event(s)" in listed
    assert "whsec_" not in listed

    code, replayed = invoke("webhooks", "replay", "--all", "--config", str(config))
    assert (code, replayed.strip()) == (0, "replayed 1 webhook event(s)")
    code, listed = invoke("webhooks", "list", "--state", "pending", "--config", str(config))
    assert webhook_id in listed and "1 pending event(s)" in listed


def test_replay_wants_seqs_with_an_app_or_all(tmp_path: Path) -> None:
    code, output = invoke("webhooks", "replay")
    assert code != 0 and "--all" in output
    code, output = invoke("webhooks", "replay", "1")
    assert code != 0 and "--app" in output
