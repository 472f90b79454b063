"""The `backend` fixture: every contract test runs once per storage engine.

An engine joins the suite with an opener below (an async context manager that
opens one handle on the store that belongs to the test's `tmp_path`, so that
several handles of one test share it, as processes would) and a line in OPENERS.

Redis: the store of a test is a key prefix of its own on the redis-server at
REDIS_URL, whose keys are deleted when the test ends; with no redis-server
answering, the Redis params are skipped, saying so.

Redis Cluster (`redis-cluster`): the same engine with `cluster=True` and its queue in
CLUSTER_PARTITIONS partitions, on a three-primary cluster the test process starts on
loopback (tests/backends/redis_cluster.py), one prefix per test as above; skipped,
saying why, without redis-server and redis-cli.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from tests.backends.redis_cluster import cluster_missing, shared_cluster_url
from wxgate.backends.base import Backend
from wxgate.backends.redis import RedisBackend
from wxgate.backends.sqlite import SqliteBackend

OpenBackend = Callable[[], Awaitable[Backend]]

REDIS_URL = "redis://127.0.0.1:6379/0"
_RUN = uuid.uuid4().hex[:8]  # keeps this run's prefixes apart from any other run's
# The cluster runs the suites with its queue partitioned, so that every promise is kept
# with one app's messages spread over the primaries.
CLUSTER_PARTITIONS = 4


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = SqliteBackend(tmp_path / "contract.db")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def redis_prefix(tmp_path: Path) -> str:
    """The key prefix of one test's store (every handle the test opens shares it)."""
    return f"wxgate-test-{_RUN}-{uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path)).hex[:12]}"


async def require_redis() -> None:
    """Skip the test, with the reason, when no redis-server answers at REDIS_URL."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except RedisError as exc:
        pytest.skip(f"no redis-server answers at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()


async def prefix_keys(prefix: str) -> set[str]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return {key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)}
    finally:
        await client.aclose()


async def delete_prefix(prefix: str) -> None:
    """Delete every key under `prefix` (SCAN + UNLINK)."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


@asynccontextmanager
async def _redis(tmp_path: Path) -> AsyncIterator[Backend]:
    await require_redis()
    prefix = redis_prefix(tmp_path)
    backend = RedisBackend(REDIS_URL, prefix=prefix)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
        await delete_prefix(prefix)


async def delete_cluster_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` on every primary of the cluster at `url`."""
    client = RedisCluster.from_url(url, decode_responses=True)
    try:
        for node in client.get_primaries():
            found = client.scan_iter(match=f"{prefix}:*", count=1000, target_nodes=node)
            for key in [key async for key in found]:
                await client.unlink(key)
    finally:
        await client.aclose()


@asynccontextmanager
async def _redis_cluster(url: str, tmp_path: Path) -> AsyncIterator[Backend]:
    prefix = redis_prefix(tmp_path)
    backend = RedisBackend(url, prefix=prefix, cluster=True, partitions=CLUSTER_PARTITIONS)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
        await delete_cluster_prefix(url, prefix)


def redis_cluster_url() -> str:
    """The seed URL of this process's three-primary Redis Cluster, started on first use;
    the test is skipped, saying why, when it cannot be started here."""
    if (why := cluster_missing()) is not None:
        pytest.skip(f"no Redis Cluster: {why}")
    return shared_cluster_url()


OPENERS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "redis": _redis,
    "sqlite": _sqlite,
}
CLUSTER = "redis-cluster"  # its opener needs the process's cluster: see open_backend


@pytest.fixture(params=sorted([*OPENERS, CLUSTER]))
async def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenBackend]:
    """Opens handles on the test's one store; every handle is closed after the test."""
    if request.param == CLUSTER:
        opener = partial(_redis_cluster, redis_cluster_url())
    else:
        opener = OPENERS[request.param]
    async with AsyncExitStack() as stack:

        async def open_handle() -> Backend:
            return await stack.enter_async_context(opener(tmp_path))

        yield open_handle


@pytest.fixture
async def backend(open_backend: OpenBackend) -> Backend:
    return await open_backend()
