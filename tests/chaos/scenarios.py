"""Faults the random campaign cannot time, each a run of its own on a small stack of
real processes (one API process behind the balancer, worker processes, the sandbox):

- `probe_after_token_expiry`: WeChat fails every send until the worker's circuit
  breaker opens; at the end of the outage every access token is expired (WeChat
  rotated them meanwhile). The half-open probe meets 42001, refreshes the token and
  resends as one probe, so sends resume within the breaker's cooldown plus a second
  of the outage's end (before the fix: a second cooldown later).
- `disk_full`: the SQLite file lives on a small volume of its own (an 8 MB tmpfs,
  which needs root; the scenario is skipped, saying why, without it); the volume is
  filled while the workers send and intake runs until refused. `/readyz` answers 503
  (`storage_writable` false) while nothing can be written; once space is freed the
  same processes, never restarted, settle and deliver every accepted message, each
  once in WeChat's inbox, and answer ready again.

Each returns a `ScenarioResult`; its `problems` are empty when the promise held.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.chaos.checks import LeakScanner
from tests.chaos.stack import API_KEY, APP, Engine, Stack, StackSettings
from tests.small_volume import Filler, mount_small_volume, unmount

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TEMPLATE = "tpl_chaos"
SENT = frozenset({"sent", "delivered"})  # WeChat took the message and the record says so
POLL_S = 0.05
COOLDOWN_S = 4.0  # the probe scenario's breaker cooldown
PROBE_MARGIN_S = 1.0  # the bound: sends resume within the cooldown plus this
_BREAKER = re.compile(rb'^wxgate_breaker_state\{app="(\w+)"\} ([0-9.e+]+)$', re.M)


@dataclass
class ScenarioResult:
    """What one scenario measured, and every way its promise did not hold."""

    name: str
    engine: Engine
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None
    elapsed_s: float = 0.0


class _Client:
    """HTTP to the stack: the API through the balancer, each process, the sandbox."""

    def __init__(self, http: aiohttp.ClientSession, stack: Stack) -> None:
        self.http = http
        self.stack = stack

    async def post_batch(self, recipients: list[str]) -> tuple[int, Any]:
        body = {"app": APP, "template_id": TEMPLATE, "data": _data(), "recipients": recipients}
        url = self.stack.api_url + "/v1/messages/batch"
        async with self.http.post(url, json=body, headers=AUTH) as response:
            return response.status, orjson.loads(await response.read())

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        cursor: str | None = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            url = self.stack.api_url + "/v1/messages"
            async with self.http.get(url, params=params, headers=AUTH) as response:
                page = orjson.loads(await response.read())["data"]
            found.update((item["id"], item["status"]) for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return {mid: found.get(mid, "missing") for mid in ids}

    async def ready(self, url: str) -> tuple[int, dict[str, bool]]:
        async with self.http.get(url + "/readyz") as response:
            return response.status, orjson.loads(await response.read())["data"]["checks"]

    async def breaker(self, worker: int) -> float | None:
        async with self.http.get(self.stack.worker_url(worker) + "/metrics") as response:
            text = await response.read()
        states = {m[1].decode(): float(m[2]) for m in _BREAKER.finditer(text)}
        return states.get(APP)

    async def sandbox(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        data = orjson.dumps(body) if body is not None else None
        url = self.stack.sandbox_url + path
        async with self.http.request(method, url, data=data, params=params) as response:
            raw = await response.read()
            response.raise_for_status()
        return orjson.loads(raw)

    async def inbox_ids(self) -> list[str]:
        inbox = await self.sandbox("GET", "/sandbox/messages", limit="1000000")
        return [item["client_msg_id"] for item in inbox["items"]]


def _data() -> dict[str, dict[str, str]]:
    return {"thing1": {"value": "chaos scenario"}}


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> float | None:
    """Poll `check`; the seconds it took, or None if it never held within `timeout_s`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


async def _run_on_stack(
    result: ScenarioResult,
    settings: StackSettings,
    workdir: Path,
    body: Callable[[_Client], Awaitable[None]],
) -> ScenarioResult:
    """Start the stack, run `body`, stop it; a process that exited by itself or stopped
    uncleanly, and a secret in any log, are problems."""
    started = time.monotonic()
    stack = Stack(settings, workdir)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        try:
            await stack.start(http)
            await body(_Client(http, stack))
            for service in (*stack.apis, *stack.workers):
                code = service.died_by_itself()
                if code is not None or service.starts != 1:
                    result.problems.append(
                        f"{service.name} restarted or exited by itself (code {code}, "
                        f"{service.starts} starts)"
                    )
        finally:
            codes = await stack.stop()
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    if unclean:
        result.problems.append(f"processes that did not stop cleanly: {unclean}")
    scanner = LeakScanner()
    for service in stack.services():
        scanner.scan_file(service.name, service.log_path)
    if scanner.leaks:
        result.problems.append(f"{scanner.leaks} secret or token string(s) in the logs")
    result.elapsed_s = time.monotonic() - started
    return result


# -- the half-open probe meets rotated tokens ------------------------------------------------


async def probe_after_token_expiry(engine: Engine, workdir: Path) -> ScenarioResult:
    result = ScenarioResult("probe after token expiry", engine)
    settings = StackSettings(
        engine=engine,
        apis=1,
        workers=1,
        breaker_failures=5,
        breaker_cooldown_s=COOLDOWN_S,
        max_attempts=1000,  # the outage must not use up the messages' attempts
        log_level="INFO",
    )

    async def body(client: _Client) -> None:
        figures = result.figures
        await client.sandbox("POST", "/sandbox/faults", {"error_rate": 1.0})
        status, answer = await client.post_batch([f"oProbe{n:03d}" for n in range(20)])
        if status != 202:
            result.problems.append(f"intake answered {status}: {answer}")
            return
        ids = answer["data"]["ids"]

        async def breaker_open() -> bool:
            return await client.breaker(0) == 1.0

        if await _until(breaker_open, 30.0) is None:
            result.problems.append("the breaker never opened during the outage")
            return
        await asyncio.sleep(COOLDOWN_S * 1.5)  # at least one probe fails on the outage
        fetches_before = (await client.sandbox("GET", "/sandbox/stats"))["token_fetches_total"]
        # WeChat rotated every token during the outage, and the outage ends.
        await client.sandbox("POST", "/sandbox/faults", {"expire_tokens": True})
        await client.sandbox("POST", "/sandbox/faults", {"error_rate": 0.0})

        async def a_send_went_through() -> bool:
            return bool(await client.inbox_ids())

        resumed = await _until(a_send_went_through, COOLDOWN_S * 3)
        figures["cooldown_s"] = COOLDOWN_S
        figures["resumed_after_s"] = None if resumed is None else round(resumed, 2)
        if resumed is None or resumed > COOLDOWN_S + PROBE_MARGIN_S:
            result.problems.append(
                f"sends resumed {figures['resumed_after_s']} s after the outage, "
                f"more than the cooldown ({COOLDOWN_S} s) plus {PROBE_MARGIN_S} s"
            )

        async def all_sent() -> bool:
            return set((await client.statuses(ids)).values()) <= SENT

        if await _until(all_sent, 60.0) is None:
            result.problems.append(
                f"not all sent: {Counter((await client.statuses(ids)).values())}"
            )
        stats = await client.sandbox("GET", "/sandbox/stats")
        figures["token_fetches_for_the_rotation"] = stats["token_fetches_total"] - fetches_before
        figures["errcode_42001_answers"] = stats["sends"].get("42001", 0)
        figures["outage_answers_-1"] = stats["sends"].get("-1", 0)
        if figures["token_fetches_for_the_rotation"] != 1:
            result.problems.append(
                f"{figures['token_fetches_for_the_rotation']} token fetches for one rotation"
            )
        inbox = Counter(await client.inbox_ids())
        if sorted(inbox) != sorted(ids) or max(inbox.values(), default=0) > 1:
            result.problems.append("the inbox does not hold each message exactly once")

    return await _run_on_stack(result, settings, workdir, body)


# -- a full disk on a small volume -----------------------------------------------------------


DISK_BATCH = 100
DISK_MESSAGES = 1_000  # before the disk fills
MAX_WHILE_FULL = 50_000  # far more than the volume holds


async def disk_full(workdir: Path) -> ScenarioResult:
    result = ScenarioResult("disk full on a small volume", "sqlite")
    volume = workdir / "volume"
    why = mount_small_volume(volume)
    if why is not None:
        result.skipped = why
        return result
    try:
        settings = StackSettings(
            engine="sqlite", apis=1, workers=2, sqlite_dir=volume, log_level="INFO"
        )
        filler = Filler(volume)
        try:
            return await _run_on_stack(result, settings, workdir, _disk_full_body(result, filler))
        finally:
            filler.stop()
    finally:
        unmount(volume)


def _disk_full_body(result: ScenarioResult, filler: Filler) -> Callable[[_Client], Awaitable[None]]:
    async def body(client: _Client) -> None:
        figures = result.figures
        stack = client.stack
        await client.sandbox("POST", "/sandbox/faults", {"latency_ms": 100.0})
        ids: list[str] = []
        for start in range(0, DISK_MESSAGES, DISK_BATCH):
            status, answer = await client.post_batch(
                [f"oDisk{n:05d}" for n in range(start, start + DISK_BATCH)]
            )
            if status != 202:
                result.problems.append(f"intake before the disk filled answered {status}")
                return
            ids += answer["data"]["ids"]

        async def sending() -> bool:
            return len(await client.inbox_ids()) >= 50

        await _until(sending, 30.0)
        filler.start()
        refused_at = None
        for start in range(DISK_MESSAGES, DISK_MESSAGES + MAX_WHILE_FULL, DISK_BATCH):
            status, answer = await client.post_batch(
                [f"oDisk{n:05d}" for n in range(start, start + DISK_BATCH)]
            )
            if status == 503:
                refused_at = start
                break
            ids += answer["data"]["ids"]
        figures["accepted_before_refused"] = len(ids)
        if refused_at is None:
            result.problems.append("intake never refused on a full disk")

        urls = [stack.api_process_url(0), *(stack.worker_url(i) for i in range(2))]

        async def reported() -> bool:
            answers = [await client.ready(url) for url in urls]
            return any(s == 503 and not c.get("storage_writable", True) for s, c in answers)

        if await _until(reported, 20.0) is None:
            result.problems.append("/readyz never reported storage that cannot write")
        await asyncio.sleep(2.0)  # the disk stays full a while: settles wait and retry
        filler.stop()
        freed = time.monotonic()
        await client.sandbox("POST", "/sandbox/faults", {"latency_ms": 0.0})

        async def all_sent() -> bool:
            return set((await client.statuses(ids)).values()) <= SENT

        if await _until(all_sent, 90.0) is None:
            ended = Counter((await client.statuses(ids)).values())
            result.problems.append(f"not all sent and settled after the disk had room: {ended}")
        figures["settled_after_s"] = round(time.monotonic() - freed, 2)

        async def all_ready() -> bool:
            answers = [await client.ready(url) for url in urls]
            return all(status == 200 for status, _ in answers)

        if await _until(all_ready, 20.0) is None:
            result.problems.append("/readyz not ready again after the disk had room")
        inbox = Counter(await client.inbox_ids())
        figures["accepted"] = len(ids)
        figures["inbox"] = sum(inbox.values())
        figures["lost"] = sum(1 for mid in ids if mid not in inbox)
        figures["twice_in_inbox"] = sum(1 for count in inbox.values() if count > 1)
        if figures["lost"] or figures["twice_in_inbox"]:
            result.problems.append(
                f"{figures['lost']} accepted messages never sent, "
                f"{figures['twice_in_inbox']} sent twice"
            )
        for service in (*stack.apis, *stack.workers):
            log = service.log_path.read_bytes()
            if b"SQLite cannot write" in log:
                figures.setdefault("processes_that_met_the_full_disk", []).append(service.name)

    return body


async def run_scenarios(
    engines: tuple[Engine, ...], keep: Path | None = None
) -> list[ScenarioResult]:
    """Every scenario: the probe on each engine, the full disk on SQLite."""
    results = []
    with tempfile.TemporaryDirectory(prefix="wxgate-chaos-scenarios-") as tmp:
        root = keep if keep is not None else Path(tmp)
        for engine in engines:
            workdir = root / f"probe-{engine}"
            workdir.mkdir(parents=True, exist_ok=True)
            results.append(await probe_after_token_expiry(engine, workdir))
        if "sqlite" in engines:
            workdir = root / "disk-full"
            workdir.mkdir(parents=True, exist_ok=True)
            results.append(await disk_full(workdir))
    return results
