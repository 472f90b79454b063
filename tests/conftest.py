"""Fixtures shared by every test package: a real sandbox on a free loopback port and
temporary SQLite files; and one check over the whole run: no log line of any test
contains a secret or an access token.

Every log line of the run (structlog and the standard library, at DEBUG) is kept in
memory as rendered; when the session ends, each line is searched for every secret
registered with the scrubber during the run (AppSecrets, callback tokens, AES keys,
API keys) and for anything shaped like a sandbox access token. A hit fails the run.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from wxgate.observability import SECRETS, configure_logging
from wxgate.sandbox.config import DEFAULT_SECRET

# The sandbox mints "90_" + 150 URL-safe characters, like WeChat's own tokens.
TOKEN_SHAPE = re.compile(r"90_[A-Za-z0-9_-]{100,}")

# Property tests check what happens, not how fast: hypothesis' default 200 ms deadline
# per example and its too-slow health check fail them on a machine busy with other work
# (every @settings inherits these; a test may still set a deadline of its own).
settings.register_profile("wxgate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("wxgate")


class _KeepEveryLine(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a line that cannot render is kept raw rather than dropped
            self.lines.append(record.getMessage())


_KEPT = _KeepEveryLine()


def _attach_keeper() -> None:
    root = logging.getLogger()
    if _KEPT not in root.handlers:
        if root.handlers and root.handlers[0].formatter is not None:
            _KEPT.setFormatter(root.handlers[0].formatter)
        root.addHandler(_KEPT)
    root.setLevel(logging.DEBUG)


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("DEBUG", "json")
    # urllib3 (under schemathesis) logs each request line at DEBUG; fuzzers build
    # those URLs from string constants of loaded modules, the sandbox secret among
    # them, so its lines would be the test's own inputs, not something wxgate said.
    logging.getLogger("urllib3").setLevel(logging.INFO)
    _attach_keeper()


@pytest.fixture(autouse=True)
def _keep_log_lines() -> Iterator[None]:
    """Tests that reconfigure logging drop the keeper; put it back around each test."""
    _attach_keeper()
    yield
    _attach_keeper()


def _leaks(lines: list[str]) -> list[str]:
    secrets = {value for value in SECRETS._values if len(value) >= 6} | {DEFAULT_SECRET}
    found = []
    for line in lines:
        if TOKEN_SHAPE.search(line) or any(secret in line for secret in secrets):
            found.append(line)
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = _leaks(_KEPT.lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"log check: {len(_KEPT.lines)} log lines searched for {len(SECRETS._values)} "
            f"registered secrets and access tokens: {len(leaks)} leak(s)"
        )
        for line in leaks[:20]:
            reporter.write_line(f"  LEAK: {SECRETS.scrub(TOKEN_SHAPE.sub('90_***', line))[:300]}")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def sqlite_token_store(path: Path, clock: object = None) -> AsyncIterator[object]:
    """The token store of a SQLite backend opened on `path` (the engine owns the file, so
    a token store is one of its parts), closed with the backend."""
    from wxgate.backends.sqlite import SqliteBackend

    backend = SqliteBackend(path, clock=clock)  # type: ignore[arg-type]
    await backend.start()
    try:
        yield backend.token_store()
    finally:
        await backend.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite file (not created yet)."""
    return tmp_path / "wxgate-test.db"


@pytest.fixture
async def sandbox() -> AsyncIterator[object]:
    """A sandbox WeChat served on a free loopback port inside the test's event loop."""
    from wxgate.sandbox.server import SandboxServer

    server = SandboxServer(host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def sandbox_control(sandbox: object) -> AsyncIterator[object]:
    """The sandbox's /sandbox/ control endpoints, spoken over HTTP."""
    from wxgate.sandbox.control import SandboxControl

    control = SandboxControl(sandbox.base_url)  # type: ignore[attr-defined]
    try:
        yield control
    finally:
        await control.close()


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A directory on a small volume of its own (tests/small_volume.py), for the disk-full
    tests; skipped, saying why, where no tmpfs can be mounted."""
    from tests.small_volume import mount_small_volume, unmount

    where = tmp_path / "volume"
    why = mount_small_volume(where)
    if why is not None:
        pytest.skip(f"no small volume for the disk-full test: {why}")
    try:
        yield where
    finally:
        unmount(where)
