"""One chaos run: start the stack, inject faults, post the messages, kill workers and the
API at random moments (and restart them), expire every token once, restart Redis, wait
until every message settles, then collect and check (tests/chaos/checks.py).

The chaos moments are drawn from the plan's seed as fractions of the progress (the
sandbox's inbox count; for the API kill, the messages accepted so far, so it lands
during intake), so they land mid-run however fast the machine is.
"""

from __future__ import annotations

import asyncio
import random
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.chaos import checks
from tests.chaos.checks import Figures, LeakScanner
from tests.chaos.intake import IntakeClient, IntakeResult, Kind, plan_units
from tests.chaos.processes import ProcessFailed
from tests.chaos.stack import API_KEY, APPID, Engine, Stack, StackSettings

POLL_S = 0.05
SETTLED_POLLS = 3  # consecutive quiet polls before the run counts as settled
PAGE = 500
_DEPTH = re.compile(rb'^wxgate_queue_depth\{status="(\w+)"\} ([0-9.e+]+)$', re.M)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run does. Fault rates add up to the transient share of template sends."""

    engine: Engine = "sqlite"
    messages: int = 1_000
    kills: int = 2
    api_kills: int = 1  # the API process too: intake retries with its keys ride it out
    storms: int = 1
    redis_restarts: int = 0
    batch_share: float = 0.5
    batch_size: int = 100
    odd_share: float = 0.02  # recipients the sandbox refuses (40003) or reports blocked
    error_rate: float = 0.05  # errcode -1
    http_502_rate: float = 0.05
    hang_rate: float = 0.05  # held past the client's read timeout
    reset_rate: float = 0.05
    # WeChat answers this late, so a kill usually lands on sends it took and the gateway
    # never heard back about: resends that client_msg_id must de-duplicate.
    latency_ms: float = 20.0
    redis_down_s: float = 1.0
    settle_timeout_s: float = 240.0
    seed: int = field(default_factory=lambda: random.randrange(2**32))
    stack: StackSettings = field(default_factory=StackSettings)


def short_plan(engine: Engine, **changes: Any) -> Plan:
    """The version `make test` runs: 1,000 messages, 2 kills, one storm (and one Redis
    restart on the Redis engine)."""
    plan = Plan(engine=engine, redis_restarts=0 if engine == "sqlite" else 1)
    return replace(plan, stack=replace(plan.stack, engine=engine), **changes)


def full_plan(engine: Engine, **changes: Any) -> Plan:
    """`make chaos`: 10,000 messages, 5 kills, one storm (and one Redis restart: on a
    cluster, of the primary serving the queue's first partition)."""
    plan = Plan(
        engine=engine, messages=10_000, kills=5, redis_restarts=0 if engine == "sqlite" else 1
    )
    return replace(plan, stack=replace(plan.stack, engine=engine), **changes)


def scale_out_plan(**changes: Any) -> Plan:
    """Issue 4's scale-out run: 5,000 messages into 2 API and 3 worker processes on one
    Redis, no injected faults, one worker SIGKILLed mid-run and restarted, and an
    account rate limit low enough (600/s) that the workers together press against it."""
    plan = Plan(
        engine="redis",
        messages=5_000,
        kills=1,
        api_kills=0,
        storms=0,
        odd_share=0.0,
        error_rate=0.0,
        http_502_rate=0.0,
        hang_rate=0.0,
        reset_rate=0.0,
        latency_ms=0.0,
        settle_timeout_s=120.0,
        stack=StackSettings(
            engine="redis", apis=2, workers=3, rate_limit_per_s=600.0, log_level="INFO"
        ),
    )
    return replace(plan, **changes)


def cluster_plan(**changes: Any) -> Plan:
    """`make test`'s run on a three-primary Redis Cluster, short: 400 messages into one
    API and two worker processes, WeChat answering in 20 ms and no injected faults; one
    worker SIGKILLed mid-run and started again, and the primary serving the queue's
    slot SIGKILLed and started again from its AOF."""
    plan = Plan(
        engine="redis-cluster",
        messages=400,
        kills=1,
        api_kills=0,
        storms=0,
        redis_restarts=1,
        odd_share=0.0,
        error_rate=0.0,
        http_502_rate=0.0,
        hang_rate=0.0,
        reset_rate=0.0,
        settle_timeout_s=120.0,
        stack=StackSettings(engine="redis-cluster", apis=1, workers=2, log_level="INFO"),
    )
    return replace(plan, **changes)


@dataclass
class _Chaos:
    """The moments of chaos still to come: (threshold, what), the threshold on the inbox
    count, or for "api" on the messages accepted."""

    pending: list[tuple[int, str]]
    kills: int = 0
    api_kills: int = 0
    storms: int = 0
    redis_restarts: int = 0
    restarts: list[asyncio.Task[None]] = field(default_factory=list)
    restarting: set[int] = field(default_factory=set)  # workers killed, not ready again yet


def _schedule(plan: Plan, expected_inbox: int, rng: random.Random) -> _Chaos:
    def at(low: float, high: float, total: int = expected_inbox) -> int:
        return max(1, int(total * rng.uniform(low, high)))

    moments = [(at(0.05, 0.85), "kill") for _ in range(plan.kills)]
    moments += [(at(0.2, 0.6, plan.messages), "api") for _ in range(plan.api_kills)]
    moments += [(at(0.2, 0.6), "storm") for _ in range(plan.storms)]
    moments += [(at(0.3, 0.7), "redis") for _ in range(plan.redis_restarts)]
    return _Chaos(sorted(moments))


class Campaign:
    """Runs one plan in `workdir`; `figures` holds the result."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.rng = random.Random(plan.seed)
        self.stack = Stack(plan.stack, workdir)
        self.scanner = LeakScanner()
        self.figures = Figures(engine=plan.engine, messages=plan.messages)
        self._started = 0.0
        self._http: aiohttp.ClientSession | None = None

    def _log(self, text: str) -> None:
        self.figures.events.append(f"{time.monotonic() - self._started:7.2f}s {text}")

    async def run(self) -> Figures:
        self._started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            self._http = http
            try:
                await self.stack.start(http)
                self._log("stack ready")
                await self._run_started(http)
            finally:
                codes = await self.stack.stop()
                self._log(f"stopped: {codes}")
        unclean = {name: code for name, code in codes.items() if code not in (0, None)}
        if unclean:
            self.figures.problems.append(f"processes that did not stop cleanly: {unclean}")
        for service in self.stack.services():
            self.scanner.scan_file(f"{service.name} log", service.log_path)
        checks.check_leaks(self.figures, self.scanner)
        self.figures.elapsed_s = time.monotonic() - self._started
        return self.figures

    async def _run_started(self, http: aiohttp.ClientSession) -> None:
        plan = self.plan
        await self._sandbox("POST", "/sandbox/faults", self._faults())
        units = plan_units(
            plan.messages, plan.batch_share, plan.batch_size, plan.odd_share, self.rng
        )
        expected_inbox = sum(
            1 for unit in units for r in unit.recipients if r.kind is not Kind.INVALID
        )
        chaos = _schedule(plan, expected_inbox, self.rng)
        intake = IntakeClient(http, self.stack.api_url, self.scanner.scan)
        intake_task = asyncio.create_task(intake.post_all(units))
        await self._direct(chaos, intake)
        result = await intake_task
        self._log(f"intake done: {len(result.accepted)} accepted in {result.elapsed_s:.1f} s")
        await asyncio.gather(*chaos.restarts)
        await self._until_settled()
        await self._collect(result, chaos)

    def _faults(self) -> dict[str, float]:
        p = self.plan
        return {
            "error_rate": p.error_rate,
            "http_502_rate": p.http_502_rate,
            "hang_rate": p.hang_rate,
            "reset_rate": p.reset_rate,
            "latency_ms": p.latency_ms,
        }

    # -- the chaos ---------------------------------------------------------------------

    async def _direct(self, chaos: _Chaos, intake: IntakeClient) -> None:
        """Fire each moment once its threshold is reached; meanwhile, restart any gateway
        process that died without being killed (and report it)."""
        deadline = time.monotonic() + self.plan.settle_timeout_s
        while chaos.pending:
            inbox = (await self._sandbox("GET", "/sandbox/stats"))["inbox"]
            accepted = len(intake.result.accepted)
            due = [m for m in chaos.pending if m[0] <= (accepted if m[1] == "api" else inbox)]
            for moment in due:
                chaos.pending.remove(moment)
                await self._fire(chaos, moment[1], inbox)
            await self._revive_crashed()
            if time.monotonic() > deadline:
                self.figures.problems.append(f"chaos moments never reached: {chaos.pending}")
                return
            await asyncio.sleep(POLL_S)

    async def _fire(self, chaos: _Chaos, what: str, inbox: int) -> None:
        moments = {
            "kill": self._kill_worker,
            "api": self._kill_api,
            "storm": self._storm,
            "redis": self._restart_redis,
        }
        await moments[what](chaos, inbox)

    async def _kill_worker(self, chaos: _Chaos, inbox: int) -> None:
        while len(chaos.restarting) == len(self.stack.workers):
            await asyncio.sleep(POLL_S)  # every worker is on its way back up
        index = self.rng.choice(
            [i for i in range(len(self.stack.workers)) if i not in chaos.restarting]
        )
        await self.stack.workers[index].kill()
        chaos.kills += 1
        chaos.restarting.add(index)
        self._log(f"SIGKILL worker-{index} at inbox {inbox}")
        restart = self._restart_worker(chaos, index, self.rng.uniform(0.0, 1.0))
        chaos.restarts.append(asyncio.create_task(restart))

    async def _kill_api(self, chaos: _Chaos, inbox: int) -> None:
        index = self.rng.randrange(len(self.stack.apis))
        await self.stack.apis[index].kill()
        chaos.api_kills += 1
        self._log(f"SIGKILL api-{index} at inbox {inbox}")
        restart = self._restart_api(index, self.rng.uniform(0, 1))
        chaos.restarts.append(asyncio.create_task(restart))

    async def _storm(self, chaos: _Chaos, inbox: int) -> None:
        await self._sandbox("POST", "/sandbox/faults", {"expire_tokens": True})
        chaos.storms += 1
        self._log(f"every access token expired at inbox {inbox}")

    async def _restart_redis(self, chaos: _Chaos, inbox: int) -> None:
        what = "a queue partition's cluster primary" if self.stack.cluster_ports else "redis-server"
        self._log(f"SIGKILL {what} at inbox {inbox}")
        await self.stack.restart_redis(self.plan.redis_down_s)
        chaos.redis_restarts += 1
        self._log(f"{what} answering again")

    async def _restart_worker(self, chaos: _Chaos, index: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        assert self._http is not None
        try:
            await self.stack.restart_worker(self._http, index)
        except ProcessFailed as exc:
            # Reported, and the worker counted as back: a restart that raised used to
            # stay "restarting" for good, and once every worker was, the next kill
            # waited for one forever (seen on a loaded machine, starts over 30 s).
            self.figures.problems.append(f"worker-{index} did not come back: {exc}")
            return
        finally:
            chaos.restarting.discard(index)
        self._log(f"worker-{index} restarted")

    async def _restart_api(self, index: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        assert self._http is not None
        try:
            await self.stack.restart_api(self._http, index)
        except ProcessFailed as exc:
            self.figures.problems.append(f"api-{index} did not come back: {exc}")
            return
        self._log(f"api-{index} restarted")

    async def _revive_crashed(self) -> None:
        """Restart a gateway process that exited without being killed, and report it."""
        assert self._http is not None
        for index, worker in enumerate(self.stack.workers):
            code = worker.died_by_itself()
            if code is not None:
                self.figures.problems.append(f"worker-{index} exited by itself with code {code}")
                await self.stack.restart_worker(self._http, index)
        for index, api in enumerate(self.stack.apis):
            code = api.died_by_itself()
            if code is not None:
                self.figures.problems.append(f"api-{index} exited by itself with code {code}")
                await self.stack.restart_api(self._http, index)

    # -- settling and collecting ---------------------------------------------------------

    async def _until_settled(self) -> None:
        """Until nothing is queued or sending and the sandbox has no report in flight."""
        deadline = time.monotonic() + self.plan.settle_timeout_s
        quiet = 0
        while quiet < SETTLED_POLLS:
            depth = await self._queue_depth()
            stats = await self._sandbox("GET", "/sandbox/stats")
            busy = depth.get("queued", 0) + depth.get("sending", 0)
            quiet = quiet + 1 if busy == 0 and stats["callbacks"]["pending"] == 0 else 0
            await self._revive_crashed()
            if time.monotonic() > deadline:
                self.figures.problems.append(f"not settled in time: {depth}")
                return
            await asyncio.sleep(POLL_S * 4)
        self._log("settled")

    async def _queue_depth(self) -> dict[str, int]:
        text = await self._get(self.stack.api_url + "/metrics", "metrics api")
        return {m[1].decode(): int(float(m[2])) for m in _DEPTH.finditer(text)}

    async def _collect(self, intake: IntakeResult, chaos: _Chaos) -> None:
        figures = self.figures
        records = await self._records()
        await self._with_events(records)
        inbox = await self._sandbox("GET", "/sandbox/messages", params={"limit": "1000000"})
        stats = await self._sandbox("GET", "/sandbox/stats")
        rate = await self._sandbox(
            "GET", "/sandbox/send-rate", params={"window_s": "1", "appid": APPID}
        )
        busiest_second = rate["accounts"][APPID]["busiest"]["sends"]
        for index in range(len(self.stack.workers)):
            await self._get(self.stack.worker_url(index) + "/metrics", f"metrics worker-{index}")
        for index in range(len(self.stack.apis)):
            await self._get(self.stack.api_process_url(index) + "/metrics", f"metrics api-{index}")
        figures.kills, figures.storms = chaos.kills, chaos.storms
        figures.api_kills = chaos.api_kills
        figures.redis_restarts = chaos.redis_restarts
        figures.intake_requests, figures.intake_retries = intake.requests, intake.retries
        figures.intake_s = intake.elapsed_s
        figures.duplicates_absorbed = stats["duplicates_absorbed"]
        figures.faults_injected = {k: v for k, v in stats["faults_injected"].items() if v}
        figures.callbacks = stats["callbacks"]
        checks.check_records(figures, intake, records)
        checks.check_inbox(figures, records, inbox["items"])
        checks.check_reasons(figures, records)
        checks.check_reports(figures, stats["callbacks"])
        checks.check_tokens(figures, stats["token_fetches_total"], 1 + chaos.storms)
        checks.check_rate(figures, busiest_second, self.plan.stack.rate_limit_per_s)
        checks.check_answers(figures, intake.answers)

    async def _records(self) -> dict[str, dict[str, Any]]:
        """Every stored message, by id, paged through the API."""
        records: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        while True:
            params = {"limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
            page = (await self._api("/v1/messages", params))["data"]
            records.update((item["id"], item) for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return records

    async def _with_events(self, records: dict[str, dict[str, Any]]) -> None:
        """Listings carry no events: fetch them for dead and failed messages."""
        for mid, record in records.items():
            if record["status"] in ("dead", "failed"):
                records[mid] = (await self._api(f"/v1/messages/{mid}", {}))["data"]

    # -- HTTP helpers --------------------------------------------------------------------

    async def _api(self, path: str, params: dict[str, str]) -> Any:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with self._http.get(
            self.stack.api_url + path, params=params, headers=headers
        ) as response:
            raw = await response.read()
            response.raise_for_status()
        self.scanner.scan(f"answer {path.split('/')[2]}", raw)
        return orjson.loads(raw)

    async def _get(self, url: str, source: str) -> bytes:
        assert self._http is not None
        async with self._http.get(url) as response:
            raw = await response.read()
        self.scanner.scan(source, raw)
        return raw

    async def _sandbox(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        assert self._http is not None
        data = orjson.dumps(body) if body is not None else None
        async with self._http.request(
            method, self.stack.sandbox_url + path, data=data, params=params
        ) as response:
            raw = await response.read()
            response.raise_for_status()
        return orjson.loads(raw)


async def run_campaign(plan: Plan, workdir: Path | None = None) -> Figures:
    """Run `plan` in `workdir` (a temporary directory, removed after, when None)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return await Campaign(plan, workdir).run()
    with tempfile.TemporaryDirectory(prefix=f"wxgate-chaos-{plan.engine}-") as tmp:
        return await Campaign(plan, Path(tmp)).run()
