"""The Redis connection of the Redis engine: one redis-server, or a Redis Cluster.

`connect(url, cluster=True)` takes `url` as a seed node: the client reads the slot
map from it and talks to every primary itself (redis-py's RedisCluster, with hiredis
as for one server). Every key one script or transaction touches lies in one slot
(the hash tags of `redis_keys`), so the engine runs unchanged on either
(docs/design.md, "Redis Cluster").
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Encoder
from redis.exceptions import (
    BusyLoadingError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Redis away for a moment: unreachable, restarting, failing over, or a cluster whose
# slots are not all served (a primary down) -> StorageUnavailable, which callers retry.
UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OutOfMemoryError,
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)


class StrFirstEncoder(Encoder):
    """redis-py's Encoder with a str tested first: nearly every argument the engine
    sends is one, and the stock order (bytes, bool, int, float, then str) cost ~390 ns
    an argument against ~150 (timed). A lease and a settle send ~65 arguments a
    message: ~15 us of a Redis worker's CPU per message. Anything else is encoded as
    before. (One server only: RedisCluster builds its encoders itself.)"""

    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if type(value) is str:
            return value.encode(self.encoding, self.encoding_errors)
        return super().encode(value)


def connect(url: str, *, cluster: bool = False) -> Any:
    """A client on `url` (connections are made on first use), decoding replies to str.

    The result is a `redis.asyncio.Redis` or a `RedisCluster`; both take the same
    commands, pipelines and scripts the engine uses."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True)
    return aioredis.Redis.from_url(url, decode_responses=True, encoder_class=StrFirstEncoder)


async def preload(client: Any, *scripts: Any) -> None:
    """Before `scripts` (redis-py Script objects) run in a pipeline of a RedisCluster,
    which, unlike a plain Redis pipeline, does not load them itself: load those some
    primary lacks (a primary restarted without them). Nothing to do on one server."""
    if not isinstance(client, RedisCluster):
        return
    for script in scripts:
        if not all(await client.script_exists(script.sha)):
            await client.script_load(script.script)
