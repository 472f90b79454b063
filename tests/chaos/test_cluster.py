"""The gateway on a three-primary Redis Cluster, as real processes (`cluster_plan`), its
queue in four partitions spread over the primaries: 400 messages over HTTP into one API
and two worker processes; one worker is SIGKILLed mid-run and started again, and so is
the primary serving the queue's first partition (from its AOF). Afterwards no accepted
message is lost or left unsettled and the sandbox's inbox has each client_msg_id once.
Each test checks one promise on the same run.

`make chaos` runs the full campaign on the cluster too (`python -m tests.chaos.run
--full`, engine redis-cluster).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.chaos.campaign import cluster_plan, run_campaign
from tests.chaos.checks import Figures
from tests.chaos.run import redis_missing

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    if (why := redis_missing("redis-cluster")) is not None:
        pytest.skip(f"no Redis Cluster: {why}")
    yield asyncio.run(run_campaign(cluster_plan(), tmp_path_factory.mktemp("chaos-cluster")))


def test_a_worker_and_a_primary_were_killed_and_came_back(run: Figures) -> None:
    assert run.engine == "redis-cluster"
    assert (run.kills, run.redis_restarts) == (1, 1)
    assert any("restarted" in event for event in run.events), run.events


def test_no_accepted_message_is_lost_or_left_unsettled(run: Figures) -> None:
    assert run.accepted == run.messages
    assert (run.lost, run.not_terminal, run.unexpected_outcome) == (0, 0, 0)
    assert sum(run.statuses.values()) == run.accepted
    assert set(run.statuses) <= {"sent", "delivered"}


def test_each_client_msg_id_reaches_wechat_once(run: Figures) -> None:
    assert run.inbox == run.messages
    assert run.inbox_duplicates == 0
    assert (run.sent_missing_from_inbox, run.msgid_mismatches) == (0, 0)


def test_the_run_reports_no_problem(run: Figures) -> None:
    assert run.problems == []
    assert run.leaks == 0
