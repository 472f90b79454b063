"""`wxgate demo` (what `make demo` runs): every sample ends the way the classification
says, within 30 s, in process and as a command."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from wxgate.demo import SAMPLES, run_demo

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
}


def final_table(output: str) -> dict[str, str]:
    """touser -> status cell of the last table the demo drew."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 4 and cells[1] in EXPECTED:
            rows[cells[1]] = cells[3]
    return rows


async def test_every_sample_ends_as_classified_within_30_s() -> None:
    output = io.StringIO()
    console = Console(file=output, width=220, color_system=None)
    started = time.monotonic()

    ok = await asyncio.wait_for(run_demo(console), 30.0)

    assert ok is True
    assert time.monotonic() - started < 30.0
    assert final_table(output.getvalue()) == EXPECTED
    assert "sandbox saw 1 token fetch(es)" in output.getvalue()


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
