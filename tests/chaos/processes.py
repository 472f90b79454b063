"""One child process of a chaos run, with its output kept in a log file of its own.

Every process is started here and signalled only by its own pid: SIGKILL for
the chaos, SIGTERM (then SIGKILL after a deadline) to stop. The log files are
scanned for secrets once the run is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The console script's own entry point, so no installed `wxgate` script is needed.
WXGATE = (sys.executable, "-c", "from wxgate.cli import app; app()")
STOP_TIMEOUT_S = 15.0
LOG_TAIL_CHARS = 2000


class ProcessFailed(RuntimeError):
    """A child process exited or never became ready."""


@dataclass
class Service:
    """A child process that can be started, killed and started again."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    signalled: bool = False  # the last exit was asked for (kill or stop)
    starting: bool = False  # start() is creating the next process

    async def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        if self.starting:
            raise RuntimeError(f"{self.name} is already starting")
        self.starts += 1
        self.starting = True
        try:
            with self.log_path.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=REPO,
                    env={**os.environ, **self.env},
                )
        finally:
            self.starting = False
        # Only now, with no await between them: while the new process was being created,
        # `process` was still the killed one, and clearing `signalled` before made that
        # kill look like a crash to whoever looked meanwhile (the campaign's
        # `_revive_crashed`, which then started a second process).
        self.process, self.signalled = process, False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def died_by_itself(self) -> int | None:
        """The exit code when the process ended without being asked to, else None."""
        if self.process is None or self.process.returncode is None or self.signalled:
            return None
        if self.starting:  # `process` is the one before, which start() replaces
            return None
        return self.process.returncode

    async def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would."""
        await self._signal(signal.SIGKILL)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; its exit code."""
        if self.process is None:
            return None
        if self.running:
            await self._signal(signal.SIGTERM, wait=False)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                await self._signal(signal.SIGKILL)
        return self.process.returncode

    async def _signal(self, signum: int, *, wait: bool = True) -> None:
        if self.process is None or not self.running:
            return
        self.signalled = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)
        if wait:
            await self.process.wait()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except FileNotFoundError:
            return ""

    async def until(
        self, ready: Callable[[], Awaitable[bool]], timeout_s: float, what: str
    ) -> None:
        """Poll `ready` until it holds; ProcessFailed (with the log's tail) if the process
        exits first or `timeout_s` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await ready():
            if not self.running:
                raise ProcessFailed(f"{self.name} exited before {what}:\n{self.log_tail()}")
            if loop.time() > deadline:
                raise ProcessFailed(
                    f"{self.name}: no {what} in {timeout_s:.0f} s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)


async def redis_answers(port: int) -> bool:
    """Whether a redis-server on 127.0.0.1:`port` answers PING (for `Service.until`)."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        return bool(await client.ping())
    except RedisError:
        return False
    finally:
        await client.aclose()
