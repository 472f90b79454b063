"""The `stack` fixture on both storage engines: a sandbox and a gateway on SQLite, then
on Redis (a key prefix of the test's own, deleted afterwards). Import it into a test
module to run each of its tests once per engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.conftest import REDIS_URL, delete_prefix, redis_prefix, require_redis
from tests.e2e.conftest import MakeStack, Stack


@pytest.fixture(name="stack", params=["sqlite", "redis"])
async def engine_stack(
    request: pytest.FixtureRequest, make_stack: MakeStack, tmp_path: Path
) -> AsyncIterator[Stack]:
    storage: dict[str, Any] = {}
    prefix = redis_prefix(tmp_path)
    if request.param == "redis":
        await require_redis()
        storage = {"backend": "redis", "redis_url": REDIS_URL, "redis_prefix": prefix}
    yield await make_stack(storage=storage)
    if request.param == "redis":
        await delete_prefix(prefix)
