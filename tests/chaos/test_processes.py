"""The chaos harness's own child processes: a kill the campaign asked for is never
taken for a crash, even while the process is being started again.

Found in a `make chaos` run: `PROBLEM api-0 exited by itself with code -9`, four
seconds after the campaign had itself SIGKILLed and restarted api-0. `Service.start`
cleared `signalled` before the new process existed, so the campaign's crash check,
looking during that await, saw the old killed process as one that died by itself and
started a second one.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.chaos.campaign import Campaign, _Chaos, short_plan
from tests.chaos.processes import ProcessFailed, Service

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")
CRASHER = (sys.executable, "-c", "raise SystemExit(7)")


@pytest.fixture
async def sleeper(tmp_path: Path) -> Service:
    service = Service("sleeper", SLEEPER, tmp_path / "sleeper.log")
    yield service
    await service.stop(timeout_s=1.0)


async def test_a_killed_process_is_not_a_crash_while_it_is_started_again(
    sleeper: Service,
) -> None:
    await sleeper.start()
    await sleeper.kill()
    restarting = asyncio.create_task(sleeper.start())
    await asyncio.sleep(0)  # start() now awaits the new process; `process` is the old one

    seen_while_starting = sleeper.died_by_itself()
    await restarting

    assert seen_while_starting is None
    assert sleeper.running and sleeper.died_by_itself() is None


async def test_a_second_start_while_one_is_under_way_is_refused(sleeper: Service) -> None:
    first = asyncio.create_task(sleeper.start())
    await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="already starting"):
        await sleeper.start()
    await first
    assert sleeper.starts == 1


async def test_a_process_that_exits_by_itself_is_reported_with_its_code(tmp_path: Path) -> None:
    crasher = Service("crasher", CRASHER, tmp_path / "crasher.log")
    await crasher.start()
    assert crasher.process is not None
    await crasher.process.wait()

    assert crasher.died_by_itself() == 7


async def test_a_worker_restart_that_fails_is_reported_and_not_waited_for_again(
    tmp_path: Path,
) -> None:
    # Seen on a loaded machine: restarts that took over the start timeout raised inside
    # their tasks, their workers stayed "restarting" for good, and the next kill waited
    # for one of them forever.
    campaign = Campaign(short_plan("sqlite"), tmp_path)
    chaos = _Chaos(pending=[], restarting={0})

    async def too_slow(http: object, index: int) -> None:
        raise ProcessFailed(f"worker-{index}: no ready answer on /readyz in 90 s")

    campaign.stack.restart_worker = too_slow  # type: ignore[method-assign]
    campaign._http = object()  # type: ignore[assignment]
    await campaign._restart_worker(chaos, 0, 0.0)

    assert chaos.restarting == set()
    assert campaign.figures.problems == [
        "worker-0 did not come back: worker-0: no ready answer on /readyz in 90 s"
    ]
