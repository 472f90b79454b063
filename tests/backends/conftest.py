"""The `backend` fixture: every contract test runs once per storage engine.

An engine joins the suite with an opener below (an async context manager that
opens one handle on the store that belongs to the test's `tmp_path`, so that
several handles of one test share it, as processes would) and a line in OPENERS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from wxgate.backends.base import Backend
from wxgate.backends.sqlite import SqliteBackend

OpenBackend = Callable[[], Awaitable[Backend]]


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = SqliteBackend(tmp_path / "contract.db")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


OPENERS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(OPENERS))
async def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenBackend]:
    """Opens handles on the test's one store; every handle is closed after the test."""
    opener = OPENERS[request.param]
    async with AsyncExitStack() as stack:

        async def open_handle() -> Backend:
            return await stack.enter_async_context(opener(tmp_path))

        yield open_handle


@pytest.fixture
async def backend(open_backend: OpenBackend) -> Backend:
    return await open_backend()
