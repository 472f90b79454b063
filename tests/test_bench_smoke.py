"""The benchmark harness cannot rot: its quick mode runs a few cases end to end.

Real processes throughout (the sandbox, the ceiling's client, four token-race
processes, worker processes on a real redis-server); the figures are not judged
for speed here, only for being measured and reported: the table on stdout, the
JSON with every figure, the chart when matplotlib (the bench extra) is installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A quick bench takes about 30 s with the cores shared by other work (5-10 s idle);
# the limit only stops a hung run, so it is generous.
RUN_TIMEOUT_S = 240


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_quick_bench_reports_the_ceiling_and_a_single_token_fetch(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--cases", "ceiling,tokens",
               "--engines", "sqlite", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
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


def _quick_bench(tmp_path: Path, *args: str) -> tuple[str, dict]:
    command = [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads((tmp_path / "latest.json").read_text())


@pytest.mark.timeout(RUN_TIMEOUT_S)
@pytest.mark.soak  # make chaos runs it
def test_quick_scale_case_reports_one_and_two_workers_on_redis(tmp_path: Path) -> None:
    stdout, report = _quick_bench(tmp_path, "--cases", "scale")
    if "Redis rows skipped" in stdout:
        pytest.skip("the scale case needs a redis-server at 127.0.0.1:6379")
    figures = {figure["key"]: figure for figure in report["figures"]}
    rates = ["scale.redis.1", "scale.redis.2", "scale.redis.2.core1"]
    expected = {
        *rates,
        *(f"{key}.per_cpu" for key in rates),
        "scale.redis.2.vs1",
        "scale.redis.2.core1.vs1",
    }
    variants = ["1", "2", "2.core1"]
    if "cluster rows skipped" not in stdout:  # redis-cli is there: the cluster rows too
        cluster_variants = ["1", "2", "1.p3", "2.p3"]  # 1 and 3 partitions
        on_cluster = [f"scale.cluster.{variant}" for variant in cluster_variants]
        expected |= {*on_cluster, *(f"{key}.per_cpu" for key in on_cluster)}
        expected |= {f"{key}.vs_redis" for key in on_cluster}
        expected |= {f"{key}.busiest_primary" for key in on_cluster}
        expected |= {"scale.cluster.2.vs1", "scale.cluster.2.p3.vs1"}
        variants += [f"cluster.{variant}" for variant in cluster_variants]
    assert set(figures) == expected
    assert all(figures[key]["median"] > 0 for key in figures)
    notes = report["details"]["scale"]
    assert [note["variant"] for note in notes] == variants
    assert notes[1]["worker1_cpu_s"] > 0 and notes[1]["worker2_cpu_s"] > 0
    assert all("sandbox_cpu_s" in note and "cpu0_busy_s" in note for note in notes)
    for note in notes[3:]:  # every primary's CPU and commands, for the capacity model
        assert len(note["primaries"]) == 3
        assert sum(p["redis_commands_per_message"] for p in note["primaries"].values()) > 1
    for note in notes[5:]:  # three partitions, one per primary: every primary works
        assert note["partitions"] == 3
        assert all(p["redis_commands_per_message"] > 1 for p in note["primaries"].values())


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_quick_scale_case_is_skipped_with_its_reason_when_redis_does_not_answer(
    tmp_path: Path,
) -> None:
    stdout, report = _quick_bench(
        tmp_path, "--cases", "scale", "--redis-url", "redis://127.0.0.1:1/0"
    )
    assert "Redis rows skipped" in stdout and "scale: skipped" in stdout
    assert report["figures"] == []


@pytest.mark.timeout(150)
@pytest.mark.soak  # make chaos runs it
def test_quick_latency_cases_report_wxgate_beside_raw_and_the_auto_window(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--cases", "latency,auto",
               "--engines", "sqlite", "--latency-ms", "20", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    figures = {figure["key"]: figure for figure in report["figures"]}
    windows = ("64", "512")
    assert set(figures) == {
        *(f"latency.raw.{w}" for w in windows),
        *(f"latency.sqlite.{w}" for w in windows),
        *(f"latency.sqlite.{w}.vs_raw" for w in windows),
        *(f"latency.auto.sqlite.{ms}ms" for ms in ("1", "30", "200")),
    }
    assert all(figure["median"] > 0 for figure in figures.values())
    for w in windows:  # the ratio is taken within the round, from the two rates
        ratio = figures[f"latency.sqlite.{w}"]["median"] / figures[f"latency.raw.{w}"]["median"]
        assert figures[f"latency.sqlite.{w}.vs_raw"]["median"] == pytest.approx(ratio)
    notes = report["details"]["latency"]
    assert {note["sender"] for note in notes} == {"raw", "wxgate", "auto"}


def test_the_asgi_driver_reports_intake_cpu_with_and_without_a_check() -> None:
    command = [sys.executable, "-m", "bench.asgi", "--requests", "100"]
    for extra, checks in (([], "SuppressionCheck"), (["--drop", "SuppressionCheck"], None)):
        done = subprocess.run(
            [*command, *extra], cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
        assert done.returncode == 0, done.stderr[-2000:]
        [line] = [line for line in done.stdout.splitlines() if " requests, CPU " in line]
        assert line.startswith("sqlite: 100 requests, CPU ")
        assert (checks in line) if checks else ("SuppressionCheck" not in line)
