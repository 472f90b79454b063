"""Configurations a gateway cannot start with, as real `wxgate` processes.

What can be known before starting (an AES key that is not base64, a SQLite directory
that is missing or not writable, a SQLite file that cannot be read or was written by a
newer wxgate, an api_base that is not http(s), a redis_url that does not parse, no app
at all) is one line naming the setting: the same line from `config check` and from
`serve`, exit status 2, and nothing else (no traceback, no warning about an unclosed
session). A failure met while starting (a SQLite file locked by another process) ends
`serve` with one such line too. Redis that does not answer is not a start-up failure:
the gateway starts and says it is not ready.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from wxgate.backends.sqlite_schema import SCHEMA_VERSION, create_schema
from wxgate.config import DEFAULT_CONFIG_FILE, Settings, hash_api_key
from wxgate.gateway import serve
from wxgate.keyring import new_api_key
from wxgate.sandbox.config import DEFAULT_APPID
from wxgate.starter_config import starter_toml
from wxgate.startup import StartupError

WXGATE = str(Path(sys.executable).with_name("wxgate"))
RUN_DEADLINE_S = 90.0  # a `serve` still running after this has not refused the config
BAD_AES_KEY = "!bcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, not base64
AS_ROOT = os.geteuid() == 0


@dataclass
class Done:
    """How one `wxgate` command ended: its exit status and every line it printed."""

    status: int
    lines: list[str]


def run(workdir: Path, env: dict[str, str], *args: str) -> Done:
    """`wxgate ARGS` in `workdir`; a `serve` that is still running at the deadline is
    stopped and reported as status None (it took the configuration)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}
    process = subprocess.Popen(
        [WXGATE, *args],
        cwd=workdir,
        env=clean | {"COLUMNS": "200", "WXGATE_SERVER__PORT": str(free_port())} | env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"`wxgate {' '.join(args)}` kept running:\n{output[-2000:]}") from None
    return Done(process.returncode, output.strip().splitlines())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory holding the wxgate.toml `config init --sandbox` writes (written here
    from the same `starter_toml`: the command itself is tested in tests/test_cli.py and
    tests/e2e/test_first_hour.py, and a process less per test saves ~1 s)."""
    text = starter_toml(hash_api_key(new_api_key()), sandbox=True)
    (tmp_path / DEFAULT_CONFIG_FILE).write_text(text, encoding="utf-8")
    return tmp_path


def assert_refused_in_one_line(workdir: Path, env: dict[str, str], *fragments: str) -> str:
    """`config check` and `serve` both refuse with the same single line (exit 2)."""
    checked = run(workdir, env, "config", "check")
    served = run(workdir, env, "serve")

    assert (checked.status, served.status) == (2, 2), (checked, served)
    assert len(checked.lines) == 1, checked.lines
    assert served.lines == checked.lines
    [line] = served.lines
    for fragment in fragments:
        assert fragment in line
    return line


def sqlite_env(path: Path) -> dict[str, str]:
    return {"WXGATE_STORAGE__SQLITE_PATH": str(path)}


# -- known before starting ----------------------------------------------------------------


def test_an_aes_key_that_is_not_base64_is_one_line(workdir: Path) -> None:
    line = assert_refused_in_one_line(
        workdir,
        {"WXGATE_APPS__DEFAULT__ENCODING_AES_KEY": BAD_AES_KEY},
        "config: apps.default.encoding_aes_key:",
        "base64",
    )
    assert BAD_AES_KEY not in line


def test_a_sqlite_directory_that_does_not_exist_is_one_line(workdir: Path) -> None:
    missing = workdir / "no-such-directory"

    assert_refused_in_one_line(
        workdir,
        sqlite_env(missing / "wxgate.db"),
        "config: storage.sqlite_path:",
        str(missing),
        "does not exist",
    )


def test_a_sqlite_path_under_a_file_is_one_line(workdir: Path) -> None:
    assert_refused_in_one_line(
        workdir,
        sqlite_env(workdir / "wxgate.toml" / "wxgate.db"),
        "config: storage.sqlite_path:",
        "not a directory",
    )


def test_a_sqlite_path_that_is_a_directory_is_one_line(workdir: Path) -> None:
    (workdir / "a-directory").mkdir()

    assert_refused_in_one_line(
        workdir, sqlite_env(workdir / "a-directory"), "config: storage.sqlite_path:", "not a file"
    )


def test_a_sqlite_path_holding_something_else_is_one_line(workdir: Path) -> None:
    other = workdir / "notes.db"
    other.write_bytes(b"these are not the bytes of a SQLite database\n" * 200)

    assert_refused_in_one_line(
        workdir, sqlite_env(other), "config: storage.sqlite_path:", "not a SQLite database"
    )


def test_a_sqlite_file_of_a_newer_schema_is_one_line(workdir: Path) -> None:
    newer = workdir / "newer.db"
    with closing(sqlite3.connect(newer, isolation_level=None)) as conn:
        create_schema(conn, time.time())
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )

    assert_refused_in_one_line(
        workdir,
        sqlite_env(newer),
        "config: storage.sqlite_path:",
        f"schema is version {SCHEMA_VERSION + 1}",
    )


@pytest.mark.skipif(AS_ROOT, reason="running as root: file permissions do not bind root")
def test_a_sqlite_directory_that_is_not_writable_is_one_line(workdir: Path) -> None:
    locked = workdir / "read-only"
    locked.mkdir(mode=0o555)

    assert_refused_in_one_line(
        workdir, sqlite_env(locked / "wxgate.db"), "config: storage.sqlite_path:", "not writable"
    )


@pytest.mark.skipif(AS_ROOT, reason="running as root: file permissions do not bind root")
def test_a_sqlite_file_that_is_not_readable_is_one_line(workdir: Path) -> None:
    unreadable = workdir / "unreadable.db"
    unreadable.touch(mode=0o200)

    assert_refused_in_one_line(
        workdir, sqlite_env(unreadable), "config: storage.sqlite_path:", "not readable"
    )


def test_an_api_base_that_is_not_http_is_one_line(workdir: Path) -> None:
    assert_refused_in_one_line(
        workdir,
        {"WXGATE_APPS__DEFAULT__API_BASE": "ftp://api.weixin.qq.com"},
        "config: apps.default.api_base:",
        "http(s)",
    )


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "redis://[::1:6379/0", "redis://h:port/0"])
def test_a_redis_url_that_does_not_parse_is_one_line(workdir: Path, url: str) -> None:
    env = {"WXGATE_STORAGE__BACKEND": "redis", "WXGATE_STORAGE__REDIS_URL": url}

    assert_refused_in_one_line(workdir, env, "config: storage.redis_url:")


def test_a_config_with_no_app_is_one_line(workdir: Path) -> None:
    config = workdir / "wxgate.toml"
    config.write_text(config.read_text().partition("[apps.default]")[0])

    assert_refused_in_one_line(workdir, {}, "config: apps: no app configured", "[apps.<name>]")


# -- met while starting --------------------------------------------------------------------


@pytest.fixture
def locked_database(workdir: Path) -> Iterator[Path]:
    """A wxgate SQLite file another process holds a write transaction on."""
    path = workdir / "locked.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        create_schema(conn, time.time())
        conn.execute("BEGIN IMMEDIATE")
        yield path
        conn.execute("ROLLBACK")


def test_a_sqlite_file_locked_by_another_process_ends_serve_with_one_line(
    workdir: Path, locked_database: Path
) -> None:
    served = run(workdir, sqlite_env(locked_database), "serve")

    assert served.status == 2, served.lines
    assert served.lines[-1].startswith("serve: storage.sqlite_path: cannot open ")
    assert "database is locked" in served.lines[-1]
    assert not any("Traceback" in line or "Unclosed" in line for line in served.lines)


def open_sessions() -> set[int]:
    return {
        id(o) for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed
    }


async def test_serve_stops_what_had_started_when_starting_fails(tmp_path: Path) -> None:
    # `wxgate serve` checks the AES key before it starts; the gateway's own serve()
    # meets it only while building the app, after the WeChat session and the worker
    # have started: both must be stopped again.
    app = {"appid": DEFAULT_APPID, "secret": "s", "callback_token": "t"}
    settings = Settings(
        server={"port": free_port()},
        storage={"sqlite_path": str(tmp_path / "gateway.db")},
        apps={"shop": app | {"encoding_aes_key": BAD_AES_KEY}},
    )
    sessions_before = open_sessions()

    try:
        await serve(settings)
    except StartupError as exc:
        message = str(exc)
    else:
        raise AssertionError("serve() started with an AES key that is not base64")

    assert message.startswith("cannot start: EncodingAESKey is not base64")
    assert "\n" not in message and BAD_AES_KEY not in message
    assert open_sessions() - sessions_before == set()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert [task.get_name() for task in others] == []  # the worker and purge loops stopped


# -- not a start-up failure ------------------------------------------------------------------


def answer_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 -- loopback http
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RUN_DEADLINE_S
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {RUN_DEADLINE_S} s")
        time.sleep(0.1)


def test_redis_that_does_not_answer_starts_the_gateway_not_ready(workdir: Path) -> None:
    port = free_port()
    env = {
        "WXGATE_STORAGE__BACKEND": "redis",
        "WXGATE_STORAGE__REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens
        "WXGATE_SERVER__PORT": str(port),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}
    process = subprocess.Popen(
        [WXGATE, "serve"], cwd=workdir, env=clean | env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answer_status(f"{base}/healthz") == 200, "the gateway answers")

        assert answer_status(f"{base}/readyz") == 503
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
