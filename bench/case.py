"""What every case gets (the sandbox, a work directory, the sizes of this run) and what it is.

A case is a name, the figures it measures, and one coroutine that measures them
once (one round) and returns {figure key: value}; anything else worth keeping
from the round goes to `Bench.note`, and lands in the JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import (
    MEASURED_CORE,
    UNLIMITED_RATE,
    Gateway,
    GatewayConfig,
    Sandbox,
    Storage,
    StorageProbe,
    drop_redis_keys,
    start_gateways,
)
from bench.profile import Recording
from bench.results import Spec
from wxgate.backends.base import Backend


@dataclass(frozen=True)
class Sizes:
    """How much each case does in one round."""

    seconds: float  # time-boxed runs (the ceiling)
    wechatpy_sends: int
    deliveries: int  # pre-filled queue of the worker case
    posts: int  # single messages posted end to end
    batch_messages: int  # messages posted in batches end to end
    batch_size: int
    paced_seconds: float
    paced_rate: int
    memory_messages: int
    memory_batch_size: int
    token_processes: int = 4
    token_coroutines: int = 64
    concurrency: int = 64
    latency_sends: int = 12_000  # pre-filled queue of each gateway run of the latency case
    latency_seconds: float = 5.0  # time-boxed raw client runs of the latency case
    auto_seconds: float = 4.0  # the latency case's auto rows: a queue of this long at the limit


FULL = Sizes(
    seconds=5.0,
    wechatpy_sends=5_000,
    deliveries=30_000,
    posts=20_000,
    batch_messages=100_000,
    batch_size=1_000,
    paced_seconds=10.0,
    paced_rate=2_000,
    memory_messages=1_000_000,
    memory_batch_size=10_000,
)
QUICK = Sizes(
    seconds=1.0,
    wechatpy_sends=300,
    deliveries=2_000,
    posts=1_000,
    batch_messages=5_000,
    batch_size=1_000,
    paced_seconds=2.0,
    paced_rate=2_000,
    memory_messages=20_000,
    memory_batch_size=10_000,
    latency_sends=1_500,
    latency_seconds=1.0,
    auto_seconds=1.5,
)


@dataclass
class Bench:
    """The shared state of a run."""

    workdir: Path
    sandbox: Sandbox
    sizes: Sizes
    engines: tuple[str, ...]
    redis_url: str
    profile_dir: Path | None = None  # where py-spy profiles of every gateway go, if anywhere
    latency_ms: float = 30.0  # the sandbox's answer delay in the latency case
    case: str = ""  # the case running now
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def note(self, case: str, **details: Any) -> None:
        self.notes.setdefault(case, []).append(details)

    @contextlib.asynccontextmanager
    async def gateway(
        self,
        engine: str,
        role: str,
        prefill: Callable[[Backend], Awaitable[None]] | None = None,
        core: int | None = MEASURED_CORE,
        delivery: Mapping[str, int | float | str] | None = None,
        app_rate: float = UNLIMITED_RATE,
    ) -> AsyncIterator[tuple[Gateway, StorageProbe]]:
        """A gateway on fresh storage (filled first by `prefill`), and the driver's probe
        into that storage; both closed, and Redis keys dropped, afterwards. `delivery`
        and `app_rate` go to its config file (see GatewayConfig.write)."""
        gateways = self.gateways(engine, role, (core,), prefill, delivery, app_rate)
        async with gateways as (started, probe):
            yield started[0], probe

    @contextlib.asynccontextmanager
    async def gateways(
        self,
        engine: str,
        role: str,
        cores: Sequence[int | None],
        prefill: Callable[[Backend], Awaitable[None]] | None = None,
        delivery: Mapping[str, int | float | str] | None = None,
        app_rate: float = UNLIMITED_RATE,
    ) -> AsyncIterator[tuple[list[Gateway], StorageProbe]]:
        """One gateway per entry of `cores` (None: unpinned), all on the same fresh storage
        and config file, started together; otherwise as `gateway`."""
        storage = Storage.fresh(self.workdir, engine)
        config = GatewayConfig.write(self.workdir, self.sandbox.url, storage, delivery, app_rate)
        try:
            async with StorageProbe(config.settings) as probe:
                if prefill is not None:
                    await prefill(probe.backend)
                gateways = await start_gateways(config, role, cores)
                name = f"{storage.redis_prefix}-{role}"
                recordings = [
                    await self._profile(gateway, name if n == 1 else f"{name}-{n}")
                    for n, gateway in enumerate(gateways, 1)
                ]
                try:
                    yield gateways, probe
                finally:
                    await asyncio.gather(*(gateway.stop() for gateway in gateways))
                    for recording in recordings:
                        if recording is not None:
                            await recording.finish()
        finally:
            if engine == "redis":
                await drop_redis_keys(storage, self.redis_url)

    async def _profile(self, gateway: Gateway, name: str) -> Recording | None:
        if self.profile_dir is None:
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return await Recording.attach(gateway.pid, self.profile_dir / f"{self.case}-{name}.txt")


Measure = Callable[[Bench], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class Case:
    name: str
    specs: tuple[Spec, ...]
    measure: Measure
