"""Fixtures shared by every test package: a real sandbox on a free loopback port,
temporary SQLite files, and a Redis database of our own (skipped with a reason
when no redis-server answers)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
