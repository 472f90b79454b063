"""The shortened chaos run, once per engine: 1,000 messages over HTTP while the sandbox
fails 20% of sends (-1, HTTP 502, hangs, resets), two worker processes and the API
process are SIGKILLed and restarted, every access token expires once (and, on Redis,
redis-server is killed and restarted). Each test checks one promise on the same run.

`make chaos` runs the full campaign (`python -m tests.chaos.run --full`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.chaos.campaign import run_campaign, short_plan
from tests.chaos.checks import Figures
from tests.chaos.run import redis_missing

pytestmark = pytest.mark.timeout(600)  # the run is shared; it takes minutes when the cores are busy


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Figures]:
    """One shortened run per engine, shared by the tests of this module."""
    engine = request.param
    if engine == "redis" and (why := redis_missing()) is not None:
        pytest.skip(f"redis engine: {why}")
    workdir = tmp_path_factory.mktemp(f"chaos-{engine}")
    yield asyncio.run(run_campaign(short_plan(engine), workdir))


def test_the_planned_chaos_happened(run: Figures) -> None:
    assert (run.kills, run.api_kills, run.storms) == (2, 1, 1)
    assert run.redis_restarts == (1 if run.engine == "redis" else 0)
    injected = run.faults_injected
    assert all(injected.get(f, 0) > 0 for f in ("errcode_-1", "http_502", "hang", "reset"))


def test_every_message_is_accepted_despite_the_chaos(run: Figures) -> None:
    assert run.accepted == run.messages
    assert run.answers_5xx.get(500, 0) == 0


def test_no_accepted_message_is_lost_or_left_unsettled(run: Figures) -> None:
    assert (run.lost, run.not_terminal) == (0, 0)
    assert sum(run.statuses.values()) == run.accepted


def test_each_message_ends_as_its_recipient_allows(run: Figures) -> None:
    assert run.unexpected_outcome == 0
    assert run.statuses.get("failed", 0) > 0 and run.statuses.get("rejected", 0) > 0


def test_no_message_reaches_wechat_twice(run: Figures) -> None:
    assert run.inbox_duplicates == 0
    assert (run.sent_missing_from_inbox, run.msgid_mismatches) == (0, 0)


def test_every_acknowledged_delivery_report_is_applied(run: Figures) -> None:
    # Messages left `sent` are exactly the reports WeChat could not deliver.
    assert run.reports_acknowledged_not_applied <= 1


def test_every_dead_or_failed_message_says_why(run: Figures) -> None:
    assert run.dead_or_failed_without_reason == 0


def test_token_fetches_stay_at_one_per_lifetime_plus_one_per_storm(run: Figures) -> None:
    assert run.token_fetches <= run.token_fetches_expected == 1 + run.storms


def test_no_secret_or_token_in_any_log_answer_or_metric(run: Figures) -> None:
    assert run.bytes_scanned > 0
    assert run.leaks == 0


def test_the_run_reports_no_problem(run: Figures) -> None:
    assert run.problems == []
