"""The chaos scenarios of tests/chaos/scenarios.py, each once on SQLite (`make chaos`
runs the probe on Redis too): real processes, real faults, one promise each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.chaos.scenarios import (
    COOLDOWN_S,
    PROBE_MARGIN_S,
    disk_full,
    probe_after_token_expiry,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.soak]  # make chaos runs these


def test_a_probe_meeting_rotated_tokens_resumes_sends_within_the_cooldown(
    tmp_path: Path,
) -> None:
    result = asyncio.run(probe_after_token_expiry("sqlite", tmp_path))

    assert result.problems == []
    assert result.figures["resumed_after_s"] <= COOLDOWN_S + PROBE_MARGIN_S
    assert result.figures["errcode_42001_answers"] >= 1  # the probe did meet the rotation


def test_a_full_disk_recovers_without_a_restart_and_loses_nothing(tmp_path: Path) -> None:
    result = asyncio.run(disk_full(tmp_path))
    if result.skipped is not None:
        pytest.skip(f"no small volume for the disk-full scenario: {result.skipped}")

    assert result.problems == []
    assert (result.figures["lost"], result.figures["twice_in_inbox"]) == (0, 0)
    assert result.figures["processes_that_met_the_full_disk"]  # the fault did happen
