"""The `wxgate` command line, run through typer's CliRunner in this process.

Operator commands open a real SQLite file named by a real TOML config; `send` and
`send-batch` talk over HTTP to a real gateway and sandbox that run on an event
loop in a background thread (the command itself runs its own loop in this one).
"""

from __future__ import annotations

import asyncio
import csv
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, APP, TEMPLATE, e2e_settings
from wxgate.backends.base import (
    NewMessage,
    Outcome,
    Pause,
    PauseReason,
    Settlement,
    Status,
)
from wxgate.backends.sqlite import SqliteBackend
from wxgate.cli import app as cli
from wxgate.config import PLACEHOLDER_APPID, hash_api_key, load_settings
from wxgate.gateway import Gateway
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_CALLBACK_TOKEN, DEFAULT_SECRET
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer
from wxgate.server import BackgroundServer, serve_in_background

T = TypeVar("T")
APP_SECRET = "cli-test-app-secret-4b8e1f"
EXTERNAL_TOKEN = "90_" + "ExternalTokenFromTheCentralService_" * 4


def invoke(*args: str, stdin: str | None = None) -> Any:
    """Run `wxgate ARGS` (wide output, so no id is folded across lines)."""
    return CliRunner().invoke(cli, list(args), input=stdin, env={"COLUMNS": "250"})


def write_config(
    path: Path,
    db_path: Path,
    *,
    port: int = 8000,
    api_base: str = "https://api.weixin.qq.com",
    secret: str = APP_SECRET,
    token_mode: str = "stable",
    api_keys: bool = True,
    callback_token: str = DEFAULT_CALLBACK_TOKEN,
    extra: str = "",
) -> Path:
    keys = f'"{hash_api_key(API_KEY)}"' if api_keys else ""
    path.write_text(
        f"""
[server]
port = {port}
api_keys = [{keys}]

[storage]
sqlite_path = "{db_path}"
sqlite_synchronous = "NORMAL"

[apps.{APP}]
appid = "{DEFAULT_APPID}"
secret = "{secret}"
api_base = "{api_base}"
token_mode = "{token_mode}"
callback_token = "{callback_token}"
{extra}
"""
    )
    return path


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def open_backend(db_path: Path) -> SqliteBackend:
    backend = SqliteBackend(db_path)
    await backend.start()
    return backend


async def stored_token(db_path: Path) -> str:
    """The access token kept in the file, whole (what the CLI shows is masked)."""
    backend = await open_backend(db_path)
    try:
        token = await backend.token_store().load(APP)
        assert token is not None
        return token.token
    finally:
        await backend.close()


def payload(touser: str) -> dict[str, Any]:
    return {"touser": touser, "template_id": TEMPLATE, "data": {"thing2": {"value": "Shipped"}}}


async def seed(db_path: Path, tousers: list[str]) -> list[str]:
    backend = await open_backend(db_path)
    try:
        answers = await backend.enqueue(
            [NewMessage(APP, payload(touser)) for touser in tousers], time.time()
        )
        return [answer.id for answer in answers]
    finally:
        await backend.close()


async def kill(db_path: Path, tousers: list[str], errcode: int, category: str) -> list[str]:
    """These messages dead with `errcode`, as a worker leaves them."""
    ids = await seed(db_path, tousers)
    backend = await open_backend(db_path)
    try:
        now = time.time()
        leases = await backend.lease_batch("cli-test", len(ids), 60.0, now)
        dead = [
            Settlement(lease, Outcome.DEAD, errcode=errcode, errmsg="dead", category=category)
            for lease in leases
        ]
        assert await backend.settle(dead, now) == [True] * len(ids)
        return ids
    finally:
        await backend.close()


async def kill_with_config_error(db_path: Path, touser: str) -> str:
    """One message dead with 40125 and its app CONFIG-paused, as a worker leaves them."""
    [message_id] = await kill(db_path, [touser], 40125, "CONFIG")
    backend = await open_backend(db_path)
    try:
        await backend.pause_app(Pause(APP, PauseReason.CONFIG, time.time(), None, 40125))
        return message_id
    finally:
        await backend.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def config(tmp_path: Path, db_path: Path) -> Path:
    return write_config(tmp_path / "wxgate.toml", db_path)


# -- keys and config ----------------------------------------------------------------------------


def test_keys_new_prints_a_key_and_the_hash_of_that_key() -> None:
    result = invoke("keys", "new")

    assert result.exit_code == 0
    [key] = re.findall(r"wxg_[A-Za-z0-9_-]{40,}", result.stdout)
    [line] = re.findall(r'"(sha256:[0-9a-f]{64})"', result.stdout)
    assert line == hash_api_key(key)
    assert invoke("keys", "new").stdout != result.stdout  # a new key each time


def test_config_check_accepts_a_good_config(config: Path) -> None:
    result = invoke("config", "check", "--config", str(config))

    assert result.exit_code == 0, result.output
    assert "config ok: 1 app(s), storage sqlite" in result.stdout


def test_config_check_names_each_problem_without_printing_secrets(
    tmp_path: Path, db_path: Path
) -> None:
    config = write_config(
        tmp_path / "wxgate.toml",
        db_path,
        api_base="http://wechat-proxy.internal:8080",
        api_keys=False,
        callback_token="",
    )

    result = invoke("config", "check", "--config", str(config))

    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(problems) == 3, problems
    assert problems[0].startswith("server.api_keys:")
    assert any(line.startswith(f"apps.{APP}.api_base:") for line in problems)
    assert any(line.startswith(f"apps.{APP}.callback_token:") for line in problems)
    assert APP_SECRET not in result.output


def test_config_that_does_not_validate_exits_2_naming_the_field(
    tmp_path: Path, db_path: Path
) -> None:
    short_key = "too-short-aes-key-but-secret"
    config = write_config(
        tmp_path / "wxgate.toml", db_path, extra=f'encoding_aes_key = "{short_key}"'
    )

    result = invoke("config", "check", "--config", str(config))

    assert result.exit_code == 2
    assert f"apps.{APP}.encoding_aes_key" in result.stderr
    assert short_key not in result.output and APP_SECRET not in result.output


def test_config_with_a_toml_syntax_error_exits_2_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "wxgate.toml"
    config.write_text('[server]\nport = = 8000\n\n[storage]\nbackend = "sqlite"\n')

    result = invoke("config", "check", "--config", str(config))

    assert result.exit_code == 2
    assert "line 2" in result.stderr


def test_config_file_that_is_missing_exits_2_naming_config_init(tmp_path: Path) -> None:
    result = invoke("config", "check", "--config", str(tmp_path / "absent.toml"))

    assert result.exit_code == 2
    assert "not found" in result.stderr
    assert f"wxgate config init --path {tmp_path / 'absent.toml'}" in result.stderr


@pytest.mark.parametrize("command", [("serve",), ("config", "check")])
def test_no_config_anywhere_names_config_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./wxgate.toml here

    result = invoke(*command)

    assert result.exit_code == 2
    assert "`wxgate config init`" in result.stderr


def test_config_check_prints_bracketed_section_names(tmp_path: Path) -> None:
    config = tmp_path / "wxgate.toml"
    config.write_text("[server]\nport = 8000\n")  # no app at all

    result = invoke("config", "check", "--config", str(config))

    assert result.exit_code == 2  # `serve` refuses it too
    assert "add an [apps.<name>] section" in result.stderr


def test_keys_new_prints_the_section_name_of_the_hash_line() -> None:
    result = invoke("keys", "new")

    assert "config line for [server] api_keys:" in result.stdout


# -- config init ----------------------------------------------------------------------------


def test_config_init_prints_a_key_once_and_writes_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "wxgate.toml"

    result = invoke("config", "init", "--sandbox", "--path", str(path))

    assert result.exit_code == 0, result.output
    [key] = re.findall(r"wxg_[A-Za-z0-9_-]{40,}", result.stdout)
    text = path.read_text()
    assert key not in text
    assert f'api_keys = ["{hash_api_key(key)}"]' in text
    assert path.stat().st_mode & 0o777 == 0o600


def test_config_init_sandbox_passes_check_with_the_sandbox_account(tmp_path: Path) -> None:
    path = tmp_path / "wxgate.toml"
    invoke("config", "init", "--sandbox", "--path", str(path))

    result = invoke("config", "check", "--config", str(path))

    assert result.exit_code == 0, result.output
    [(name, app)] = load_settings(path).apps.items()
    assert (name, app.appid, app.api_base) == ("default", DEFAULT_APPID, "http://127.0.0.1:8081")
    assert app.secret.get_secret_value() == DEFAULT_SECRET
    assert app.callback_token.get_secret_value() == DEFAULT_CALLBACK_TOKEN
    assert load_settings(path).server.worker_port == 0


def test_config_init_for_a_real_account_leaves_placeholders_check_names(tmp_path: Path) -> None:
    path = tmp_path / "wxgate.toml"
    invoke("config", "init", "--path", str(path))

    result = invoke("config", "check", "--config", str(path))

    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.strip()]
    assert [problem.split(":")[0] for problem in problems] == [
        "apps.default.appid",
        "apps.default.secret",
    ]
    token = load_settings(path).apps["default"].callback_token.get_secret_value()
    assert re.fullmatch(r"[0-9a-f]{32}", token)  # what WeChat's console accepts as a Token


def test_config_init_placeholders_give_way_to_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "wxgate.toml"
    invoke("config", "init", "--path", str(path))
    path.write_text(path.read_text().replace(PLACEHOLDER_APPID, "wx0123456789abcdef"))

    result = CliRunner().invoke(
        cli,
        ["config", "check", "--config", str(path)],
        env={"WXGATE_APPS__DEFAULT__SECRET": APP_SECRET},
    )

    assert result.exit_code == 0, result.output


def test_config_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "wxgate.toml"
    path.write_text("# mine\n")

    refused = invoke("config", "init", "--path", str(path))
    kept = path.read_text()
    forced = invoke("config", "init", "--sandbox", "--force", "--path", str(path))

    assert refused.exit_code == 1
    assert "--force" in refused.stderr
    assert kept == "# mine\n"
    assert forced.exit_code == 0
    assert DEFAULT_APPID in path.read_text()


# -- operator tools on the storage --------------------------------------------------------------


def test_messages_list_filters_and_show_prints_one_record(config: Path, db_path: Path) -> None:
    ids = run(seed(db_path, ["oList_1", "oList_2", "oList_3"]))

    listed = invoke("messages", "list", "--config", str(config))
    only = invoke("messages", "list", "--touser", "oList_2", "--config", str(config))
    none_sent = invoke("messages", "list", "--status", "sent", "--config", str(config))
    shown = invoke("messages", "show", ids[1], "--config", str(config))

    assert listed.exit_code == only.exit_code == none_sent.exit_code == 0
    assert all(message_id in listed.stdout for message_id in ids)
    assert "3 message(s)" in listed.stdout
    assert ids[1] in only.stdout and ids[0] not in only.stdout
    assert "0 message(s)" in none_sent.stdout
    assert shown.exit_code == 0
    assert f'"id": "{ids[1]}"' in shown.stdout and '"status": "queued"' in shown.stdout


def test_messages_list_prints_bracketed_user_data_as_it_is(config: Path, db_path: Path) -> None:
    run(seed(db_path, ["o[bold]Bracket[/bold]"]))

    result = invoke("messages", "list", "--config", str(config))

    assert result.exit_code == 0
    assert "o[bold]Bracket[/bold]" in result.stdout


def test_messages_show_of_an_unknown_id_exits_1(config: Path, db_path: Path) -> None:
    run(seed(db_path, ["oList_1"]))

    result = invoke("messages", "show", "01NOSUCHMESSAGE0000000000", "--config", str(config))

    assert result.exit_code == 1
    assert "no message" in result.stderr


def test_messages_list_refuses_an_unknown_status(config: Path) -> None:
    result = invoke("messages", "list", "--status", "lost", "--config", str(config))

    assert result.exit_code == 2
    assert "queued" in result.output  # the choices are named


def test_dlq_replay_requeues_and_lifts_the_config_pause(config: Path, db_path: Path) -> None:
    dead_id = run(kill_with_config_error(db_path, "oDead_1"))
    listed = invoke("dlq", "list", "--errcode", "40125", "--config", str(config))
    other_code = invoke("dlq", "list", "--errcode", "-1", "--config", str(config))

    replayed = invoke("dlq", "replay", "--all", "--app", APP, "--config", str(config))

    assert listed.exit_code == 0
    assert dead_id in listed.stdout and "1 dead letter(s)" in listed.stdout
    assert "0 dead letter(s)" in other_code.stdout
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 message(s)" in replayed.stdout
    assert f"lifted the CONFIG pause of: {APP}" in replayed.stdout

    async def after() -> tuple[Any, dict[str, Pause]]:
        backend = await open_backend(db_path)
        try:
            return await backend.get(dead_id), await backend.pauses(time.time())
        finally:
            await backend.close()

    record, pauses = run(after())
    assert record.status is Status.QUEUED
    assert pauses == {}


def test_dlq_list_by_errcode_finds_older_dead_letters(config: Path, db_path: Path) -> None:
    [old] = run(kill(db_path, ["oDead_old"], 40125, "CONFIG"))
    run(kill(db_path, [f"oDead_new_{n}" for n in range(30)], -1, "TRANSIENT"))

    result = invoke("dlq", "list", "--errcode", "40125", "--limit", "10", "--config", str(config))

    assert result.exit_code == 0
    assert old in result.stdout and "1 dead letter(s)" in result.stdout


def test_dlq_replay_by_id_and_without_arguments(config: Path, db_path: Path) -> None:
    dead_id = run(kill_with_config_error(db_path, "oDead_2"))

    refused = invoke("dlq", "replay", "--config", str(config))
    by_id = invoke("dlq", "replay", dead_id, "--config", str(config))

    assert refused.exit_code == 2  # neither ids nor --all
    assert by_id.exit_code == 0 and "replayed 1 message(s)" in by_id.stdout
    assert f"lifted the CONFIG pause of: {APP}" in by_id.stdout


def test_apps_list_shows_a_pause_and_resume_lifts_it(config: Path, db_path: Path) -> None:
    async def pause() -> None:
        backend = await open_backend(db_path)
        try:
            now = time.time()
            await backend.pause_app(Pause(APP, PauseReason.QUOTA, now, now + 3600, 45009))
        finally:
            await backend.close()

    run(pause())
    listed = invoke("apps", "list", "--config", str(config))
    resumed = invoke("apps", "resume", APP, "--config", str(config))
    again = invoke("apps", "resume", APP, "--config", str(config))
    unknown = invoke("apps", "resume", "nosuchapp", "--config", str(config))
    listed_after = invoke("apps", "list", "--config", str(config))

    assert listed.exit_code == 0
    assert DEFAULT_APPID in listed.stdout and "QUOTA until" in listed.stdout
    assert APP_SECRET not in listed.output
    assert f"{APP}: resumed" in resumed.stdout
    assert f"{APP}: was not paused" in again.stdout
    assert unknown.exit_code == 2
    assert "QUOTA" not in listed_after.stdout


def test_token_set_reads_stdin_and_token_show_masks_it(tmp_path: Path, db_path: Path) -> None:
    config = write_config(tmp_path / "wxgate.toml", db_path, secret="", token_mode="external")

    stored = invoke(
        "token", "set", "--expires-in", "3600", "--config", str(config), stdin=EXTERNAL_TOKEN
    )
    shown = invoke("token", "show", "--config", str(config))

    assert stored.exit_code == 0, stored.output
    assert shown.exit_code == 0, shown.output
    for result in (stored, shown):
        assert EXTERNAL_TOKEN not in result.output
        assert EXTERNAL_TOKEN[:12] not in result.output
    assert f"90_E…({len(EXTERNAL_TOKEN)} chars)" in shown.stdout
    assert re.search(r"(3600|3599) s", shown.stdout)

    assert run(stored_token(db_path)) == EXTERNAL_TOKEN  # stored whole; only its display is masked


def test_token_set_with_nothing_on_stdin_is_refused(tmp_path: Path, db_path: Path) -> None:
    config = write_config(tmp_path / "wxgate.toml", db_path, secret="", token_mode="external")

    result = invoke("token", "set", "--expires-in", "60", "--config", str(config), stdin="")

    assert result.exit_code == 2


# -- send and send-batch through a running gateway ----------------------------------------------


class LiveGateway:
    """A sandbox and a gateway on an event loop of their own, in a background thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = tmp_path / "live.db"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sandbox: SandboxServer | None = None
        self.control: SandboxControl | None = None
        self._gateway: Gateway | None = None
        self._server: BackgroundServer | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        callback_url = f"{self.url}/wechat/callback/{APP}"
        self.sandbox = SandboxServer(port=0, callback_url=callback_url)
        await self.sandbox.start()
        self.control = SandboxControl(self.sandbox.base_url)
        settings = e2e_settings(
            port=self.port, db_path=self.db_path, api_base=self.sandbox.base_url, safe=False
        )
        self._gateway = Gateway(settings)
        await self._gateway.start()
        assert self._gateway.app is not None
        self._server = await serve_in_background(self._gateway.app, "127.0.0.1", self.port)

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if self._gateway is not None:
            await self._gateway.stop()
        if self.control is not None:
            await self.control.close()
        if self.sandbox is not None:
            await self.sandbox.stop()

    def inbox_total(self) -> int:
        assert self.control is not None
        return int(self.run(self.control.inbox(limit=1))["total"])

    def statuses(self) -> dict[Status, int]:
        """Messages per status (those with any)."""
        assert self._gateway is not None and self._gateway.backend is not None
        counts = self.run(self._gateway.backend.counts())
        return {status: n for status, n in counts.items() if n}

    def wait_delivered(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.statuses().get(Status.DELIVERED, 0) < count:
            assert time.monotonic() < deadline, f"not {count} delivered: {self.statuses()}"
            time.sleep(0.05)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = LiveGateway(tmp_path)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def live_config(tmp_path: Path, live: LiveGateway) -> Path:
    """A client's config: only the server address matters to send and send-batch."""
    return write_config(tmp_path / "client.toml", tmp_path / "unused.db", port=live.port)


def test_send_delivers_one_message_through_the_gateway(
    live: LiveGateway, live_config: Path
) -> None:
    def send(*data: str) -> Any:
        pairs = [arg for item in data for arg in ("-d", item)]
        return invoke(
            "send", "--touser", "oCli_send", "--template-id", TEMPLATE, *pairs,
            "--idempotency-key", "cli-send-1", "--api-key", API_KEY,
            "--config", str(live_config),
        )  # fmt: skip

    result = send("thing2=Shipped", "time3=2026-11-29 10:30")
    again = send("thing2=Shipped", "time3=2026-11-29 10:30")
    other = send("thing2=Shipped")  # the same key for another request

    assert result.exit_code == 0, result.output
    assert "HTTP 202" in result.stdout and '"status": "queued"' in result.stdout
    assert again.exit_code == 0 and "HTTP 200" in again.stdout
    assert other.exit_code == 1 and "HTTP 422" in other.output and "42200" in other.output
    live.wait_delivered(1)
    assert live.inbox_total() == 1


def test_send_with_a_wrong_api_key_exits_1(live: LiveGateway, live_config: Path) -> None:
    result = invoke(
        "send",
        "--touser",
        "oCli_send",
        "--template-id",
        TEMPLATE,
        "-d",
        "thing2=Shipped",
        "--api-key",
        "not-a-key",
        "--config",
        str(live_config),
    )

    assert result.exit_code == 1
    assert "HTTP 401" in result.stderr
    assert live.statuses() == {}


def test_send_batch_sends_every_row_once_even_when_rerun(
    tmp_path: Path, live: LiveGateway, live_config: Path
) -> None:
    rows = 120
    csv_path = tmp_path / "recipients.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["touser", "thing2", "time3"])
        writer.writerows([f"oCsv_{n:04d}", f"Order {n}", "2026-11-29 10:30"] for n in range(rows))
    args = (
        "send-batch",
        "--csv",
        str(csv_path),
        "--template-id",
        TEMPLATE,
        "--batch-size",
        "50",
        "--api-key",
        API_KEY,
        "--config",
        str(live_config),
    )

    first = invoke(*args)
    live.wait_delivered(rows)
    second = invoke(*args)

    assert first.exit_code == 0, first.output
    assert "sending" in first.stdout and "100%" in first.stdout  # the progress bar, finished
    assert f"accepted {rows} messages in batches:" in first.stdout
    assert second.exit_code == 0, second.output
    batches = first.stdout.split("in batches:")[1].split()
    assert len(batches) == 3  # 120 rows in batches of 50
    assert second.stdout.split("in batches:")[1].split() == batches  # the same batches again
    time.sleep(0.3)
    assert live.statuses() == {Status.DELIVERED: rows}
    assert live.inbox_total() == rows


def test_dlq_replay_by_errcode_leaves_other_dead_letters(config: Path, db_path: Path) -> None:
    run(kill_with_config_error(db_path, "oDead_3"))
    base = ("dlq", "replay", "--all", "--config", str(config))

    other = invoke(*base, "--errcode", "-1")
    matching = invoke(*base, "--errcode", "40125")

    assert other.exit_code == 0 and "replayed 0 message(s)" in other.stdout
    assert "lifted" not in other.stdout  # a pause for 40125 is not lifted by a -1 replay
    assert matching.exit_code == 0 and "replayed 1 message(s)" in matching.stdout
    assert f"lifted the CONFIG pause of: {APP}" in matching.stdout


def test_token_refresh_and_show_never_print_the_fetched_token(
    tmp_path: Path, db_path: Path, live: LiveGateway
) -> None:
    assert live.sandbox is not None
    config = write_config(
        tmp_path / "wxgate.toml",
        db_path,
        api_base=live.sandbox.base_url,
        secret=DEFAULT_SECRET,
    )

    refreshed = invoke("token", "refresh", "--config", str(config))
    shown = invoke("token", "show", "--config", str(config))

    token = run(stored_token(db_path))
    assert refreshed.exit_code == 0 and shown.exit_code == 0, refreshed.output + shown.output
    for result in (refreshed, shown):
        assert token not in result.output and token[:12] not in result.output
        assert f"{token[:4]}…({len(token)} chars)" in result.output
        assert DEFAULT_SECRET not in result.output
