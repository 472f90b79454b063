"""Scale-out on Redis: 2 API processes (behind a load balancer) and 3 worker processes
sharing one redis-server and one sandbox, as `wxgate serve --role api|worker`.

5,000 messages posted over HTTP, singles and batches through both API processes; one
worker SIGKILLed mid-run and started again. Afterwards every message is terminal, the
sandbox's inbox has each client_msg_id once, the sandbox saw exactly one token fetch
for all five processes, and the sends it saw never exceeded the account's rate limit
(600/s, shared through Redis) by more than 10% in any 1-second window.

The processes, the intake client and the checks are the chaos harness's
(tests/chaos/), run with no injected faults; see `scale_out_plan`.

The rate check needs workers that can go faster than the limit. On a machine busy
with other work they may not reach 600/s; then the run is repeated once at a limit
below the rate this machine was measured to reach, so that the limit binds again and
both bounds are checked where it does (`runs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.chaos.campaign import run_campaign, scale_out_plan
from tests.chaos.checks import RATE_TOLERANCE, Figures
from tests.chaos.run import redis_missing

pytestmark = pytest.mark.timeout(720)  # two runs when busy: 357 s seen with a hog per core

PRESSED = 0.8  # the busiest second reached this share of the limit: the limit held them back
RETRY_SHARE = 0.7  # the repeated run's limit, as a share of the rate the first one reached


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Figures]]:
    """The scale-out run at 600/s; and when its busiest second stayed below PRESSED of
    the limit (the workers could not go faster on this machine at this moment), one
    more run at RETRY_SHARE of the busiest second measured, where the limit binds."""
    if (why := redis_missing()) is not None:
        pytest.skip(f"scale-out needs the redis engine: {why}")
    plan = scale_out_plan()
    done = [asyncio.run(run_campaign(plan, tmp_path_factory.mktemp("scale-out")))]
    if done[0].busiest_second < PRESSED * plan.stack.rate_limit_per_s:
        limit = float(int(RETRY_SHARE * done[0].busiest_second))
        plan = replace(plan, stack=replace(plan.stack, rate_limit_per_s=limit))
        done.append(asyncio.run(run_campaign(plan, tmp_path_factory.mktemp("scale-out"))))
    yield done


@pytest.fixture(scope="module")
def run(runs: list[Figures]) -> Figures:
    return runs[0]


def test_five_processes_share_one_redis_and_one_worker_is_killed_and_restarted(run: Figures):
    assert run.engine == "redis"
    assert run.kills == 1
    assert any("restarted" in event for event in run.events), run.events


def test_every_accepted_message_is_terminal(run: Figures):
    assert run.accepted == run.messages == 5_000
    assert (run.lost, run.not_terminal, run.unexpected_outcome) == (0, 0, 0)
    assert sum(run.statuses.values()) == run.accepted
    assert set(run.statuses) <= {"sent", "delivered"}


def test_each_client_msg_id_reaches_wechat_once(run: Figures):
    assert run.inbox == run.messages
    assert run.inbox_duplicates == 0
    assert (run.sent_missing_from_inbox, run.msgid_mismatches) == (0, 0)


def test_all_processes_together_fetch_one_token(run: Figures):
    assert run.token_fetches == 1


def test_the_shared_rate_limit_holds_across_three_workers(runs: list[Figures]):
    for run in runs:
        assert run.busiest_second <= RATE_TOLERANCE * run.rate_limit_per_s
    # and the limit was what held them back: the workers pressed against it (at 600/s,
    # or in the repeated run at a limit below what this machine was seen to reach)
    last = runs[-1]
    assert last.busiest_second >= PRESSED * last.rate_limit_per_s, [
        (run.busiest_second, run.rate_limit_per_s) for run in runs
    ]


def test_a_repeated_run_keeps_every_message_once(runs: list[Figures]):
    for run in runs[1:]:  # the first run is checked by the tests above
        assert run.accepted == run.inbox == run.messages and run.inbox_duplicates == 0
        assert (run.lost, run.not_terminal, run.problems) == (0, 0, [])


def test_the_run_reports_no_problem(run: Figures):
    assert run.problems == []
    assert run.leaks == 0
