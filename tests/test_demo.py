"""`wxgate demo` (what `make demo` runs): every sample ends the way the classification
says, within 30 s, in process and as a command; its table fits 100 columns, and the
worker's log lines stay out of it."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from wxgate.backends.base import Status
from wxgate.demo import SAMPLES, held_log_lines, run_demo, status_table

MAX_MSGID = 18446744073709551615  # the widest msgid there is: 20 digits

# The status column of the demo's final table, per sample.
EXPECTED = {
    "oAlice_demo": "delivered",
    "oBob_demo": "delivered",
    "oCarol_demo": "delivered",
    "busy_dave": "delivered",
    "blocked_erin": "rejected (failed:user block)",
    "sysfail_frank": "rejected (failed: system failed)",
    "invalid_grace": "failed (40003 RECIPIENT)",
    "unfollowed_heidi": "failed (43004 RECIPIENT)",
    "refused_ivan": "failed (43101 RECIPIENT)",
    "oJudy_demo": "failed (40037 REQUEST)",
    "oKate_demo": "delivered",
    "oLiam_demo": "delivered",
}


def final_table(output: str) -> dict[str, str]:
    """touser -> status cell of the last table the demo drew."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        # Columns are two or more spaces apart; a cell holds single spaces only.
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) > 3 and cells[0] in EXPECTED:
            rows[cells[0]] = cells[2]
    return rows


async def test_every_sample_ends_as_classified_within_30_s() -> None:
    output = io.StringIO()
    console = Console(file=output, width=220, color_system=None)
    started = time.monotonic()

    ok = await asyncio.wait_for(run_demo(console), 30.0)

    assert ok is True
    assert time.monotonic() - started < 30.0
    assert final_table(output.getvalue()) == EXPECTED
    # One token per account: the official account's and the mini program's.
    assert "sandbox saw 2 token fetch(es)" in output.getvalue()
    assert "grants of oKate_demo in default (sub:order_shipped): 1 one-time" in output.getvalue()
    assert "grants of oLiam_demo in mini (mini:order_shipped): 0 one-time" in output.getvalue()
    # The registry part: a key the template lacks refused by name, 43004 then suppressed.
    assert "refused 400 at body.data.thing9" in output.getvalue()
    assert "unfollowed_heidi (43004 above) -> HTTP 202, suppressed" in output.getvalue()


def test_demo_notices_a_sample_that_ends_otherwise() -> None:
    by_touser = {sample.touser: sample for sample in SAMPLES}
    assert set(by_touser) == set(EXPECTED)

    assert by_touser["invalid_grace"].met_by({"status": "failed", "last_errcode": 40003})
    assert not by_touser["invalid_grace"].met_by({"status": "dead", "last_errcode": 40003})
    assert not by_touser["invalid_grace"].met_by({"status": "failed", "last_errcode": 43004})
    blocked = by_touser["blocked_erin"]
    assert not blocked.met_by({"status": "rejected", "report_status": "failed: system failed"})
    assert not by_touser["busy_dave"].met_by(None)


def test_make_demo_command_exits_0(tmp_path: Path) -> None:
    wxgate = str(Path(sys.executable).with_name("wxgate"))

    env = {**os.environ, "COLUMNS": "200"}  # wide enough that no openid is cut short

    done = subprocess.run(
        [wxgate, "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert final_table(done.stdout) == EXPECTED
    assert "not as expected" not in done.stdout


def final_state(sample: Any) -> dict[str, Any]:
    """The record `sample` ends with, its longest form: a 20-digit msgid on every row."""
    return {
        "status": str(sample.status),
        "msgid": str(MAX_MSGID),
        "last_errcode": sample.errcode,
        "last_category": "RECIPIENT",
        "report_status": sample.report_status,
    }


def test_the_table_fits_100_columns_and_folds_no_id() -> None:
    rows = [(sample, final_state(sample)) for sample in SAMPLES]
    rows[3] = (SAMPLES[3], {"status": str(Status.QUEUED), "attempts": 2})  # retrying
    output = io.StringIO()

    Console(file=output, width=100, color_system=None).print(status_table(rows, 12.3))

    lines = output.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    for sample in SAMPLES:
        [row] = [line for line in lines if sample.touser in line.split()]
        assert sample.template_id in row.split()
        if sample is not SAMPLES[3]:
            assert str(MAX_MSGID) in row.split()


def test_held_log_lines_are_written_in_order_when_the_block_ends() -> None:
    seen: list[str] = []
    watcher = logging.Handler(logging.WARNING)
    watcher.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(watcher)
    try:
        with held_log_lines():
            logging.getLogger("wxgate.test").warning("first")
            logging.getLogger("wxgate.test").warning("second")
            assert seen == []
        assert seen == ["first", "second"]
    finally:
        logging.getLogger().removeHandler(watcher)


async def test_the_workers_warnings_come_after_the_table_within_100_columns() -> None:
    output = io.StringIO()
    table_drawn_at_each_warning: list[bool] = []
    watcher = logging.Handler(logging.WARNING)
    watcher.emit = lambda record: table_drawn_at_each_warning.append(  # type: ignore[method-assign]
        "oJudy_demo" in output.getvalue()
    )
    logging.getLogger().addHandler(watcher)
    try:
        ok = await asyncio.wait_for(run_demo(Console(file=output, width=100)), 30.0)
    finally:
        logging.getLogger().removeHandler(watcher)

    assert ok is True
    assert table_drawn_at_each_warning  # the failing samples made the worker warn
    assert all(table_drawn_at_each_warning)
    assert max(len(line) for line in output.getvalue().splitlines()) <= 100
