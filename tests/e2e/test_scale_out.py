"""Scale-out on Redis: 2 API processes (behind a load balancer) and 3 worker processes
sharing one redis-server and one sandbox, as `wxgate serve --role api|worker`.

5,000 messages posted over HTTP, singles and batches through both API processes; one
worker SIGKILLed mid-run and started again. Afterwards every message is terminal, the
sandbox's inbox has each client_msg_id once, the sandbox saw exactly one token fetch
for all five processes, and the sends it saw never exceeded the account's rate limit
(600/s, shared through Redis) by more than 10% in any 1-second window.

The processes, the intake client and the checks are the chaos harness's
(tests/chaos/), run with no injected faults; see `scale_out_plan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.chaos.campaign import run_campaign, scale_out_plan
from tests.chaos.checks import RATE_TOLERANCE, Figures
from tests.chaos.run import redis_missing

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    if (why := redis_missing()) is not None:
        pytest.skip(f"scale-out needs the redis engine: {why}")
    workdir = tmp_path_factory.mktemp("scale-out")
    yield asyncio.run(run_campaign(scale_out_plan(), workdir))


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


def test_the_shared_rate_limit_holds_across_three_workers(run: Figures):
    assert run.busiest_second <= RATE_TOLERANCE * run.rate_limit_per_s
    # and the limit was what held them back: the workers pressed against it
    assert run.busiest_second >= 0.8 * run.rate_limit_per_s


def test_the_run_reports_no_problem(run: Figures):
    assert run.problems == []
    assert run.leaks == 0
