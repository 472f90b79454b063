"""The benchmark harness cannot rot: its quick mode runs two cases end to end.

Real processes throughout (the sandbox, the ceiling's client, four token-race
processes); the figures are not judged for speed here, only for being measured
and reported: the table on stdout, the JSON with every figure, the chart when
matplotlib (the bench extra) is installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_quick_bench_reports_the_ceiling_and_a_single_token_fetch(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--cases", "ceiling,tokens",
               "--engines", "sqlite", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wxgate benchmarks" in done.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    figures = {figure["key"]: figure for figure in report["figures"]}
    assert set(figures) == {"ceiling", "ceiling.per_cpu", "tokens.sqlite"}
    assert figures["ceiling"]["median"] > 0 and figures["ceiling.per_cpu"]["median"] > 0
    assert figures["tokens.sqlite"]["values"] == [1]
    assert figures["tokens.sqlite"]["met"] is True
    assert report["machine"]["cores"] and "sandbox" in report["commands"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latest.png").stat().st_size > 0
