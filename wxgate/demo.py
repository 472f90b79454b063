"""`wxgate demo`: the sandbox and a gateway in one process, a handful of messages, a live table.

Everything is real except WeChat: the gateway stores messages in a temporary
SQLite file, its worker sends them over HTTP to the sandbox, and the sandbox
reports delivery back to the gateway's signed, AES-encrypted callback. The
sample includes the sandbox's failing test openids, so each row of the table
ends the way docs/design.md, "Classification", says it should.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

from wxgate.config import (
    AppSettings,
    DeliverySettings,
    LogSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    hash_api_key,
)
from wxgate.gateway import Gateway
from wxgate.sandbox.server import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_SECRET,
    SandboxServer,
)
from wxgate.server import serve_in_background

TERMINAL = frozenset({"delivered", "rejected", "failed", "dead"})
STYLE = {
    "delivered": "green",
    "rejected": "yellow",
    "failed": "red",
    "dead": "bold red",
    "sent": "cyan",
    "sending": "blue",
    "queued": "white",
}


@dataclass(frozen=True, slots=True)
class Sample:
    touser: str
    template_id: str
    expect: str  # the expected outcome, as the table shows it
    data: dict[str, dict[str, str]]
    # The same, checked against the record: status, and errcode or report when given.
    status: str = "delivered"
    errcode: int | None = None
    report_status: str | None = None

    def met_by(self, record: dict[str, Any] | None) -> bool:
        """Whether `record` ended the way the classification says this sample should."""
        if record is None or record["status"] != self.status:
            return False
        if self.errcode is not None and record.get("last_errcode") != self.errcode:
            return False
        return self.report_status is None or record.get("report_status") == self.report_status


def _order(n: int) -> dict[str, dict[str, str]]:
    return {
        "character_string1": {"value": f"SO2026112900{n:02d}"},
        "thing2": {"value": "Left Hangzhou depot"},
        "time3": {"value": "2026-11-29 10:30"},
        "amount4": {"value": f"¥{100 + n * 7}.00"},
    }


SHIPPED = "tmpl_order_shipped"
SAMPLES = (
    Sample("oAlice_demo", SHIPPED, "delivered", _order(1)),
    Sample("oBob_demo", SHIPPED, "delivered", _order(2)),
    Sample("oCarol_demo", SHIPPED, "delivered", _order(3)),
    Sample("busy_dave", SHIPPED, "delivered after 2 retries (-1)", _order(4)),
    Sample(
        "blocked_erin",
        SHIPPED,
        "rejected: user block",
        _order(5),
        "rejected",
        report_status="failed:user block",
    ),
    Sample(
        "sysfail_frank",
        SHIPPED,
        "rejected: system failed",
        _order(6),
        "rejected",
        report_status="failed: system failed",
    ),
    Sample("invalid_grace", SHIPPED, "failed 40003 (RECIPIENT)", _order(7), "failed", 40003),
    Sample("unfollowed_heidi", SHIPPED, "failed 43004 (RECIPIENT)", _order(8), "failed", 43004),
    Sample("refused_ivan", SHIPPED, "failed 43101 (RECIPIENT)", _order(9), "failed", 43101),
    Sample(
        "oJudy_demo", "bad_retired_template", "failed 40037 (REQUEST)", _order(10), "failed", 40037
    ),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(db_path: Path, port: int, sandbox_url: str, api_key: str) -> Settings:
    """A gateway for the sandbox's default account, with quick retries so the demo is short."""
    return Settings(
        server=ServerSettings(port=port, api_keys=[hash_api_key(api_key)]),
        storage=StorageSettings(sqlite_path=str(db_path)),
        delivery=DeliverySettings(backoff_base_s=0.2, backoff_cap_s=1.0, max_attempts=5),
        log=LogSettings(level="WARNING"),
        apps={
            "default": AppSettings(
                appid=DEFAULT_APPID,
                secret=DEFAULT_SECRET,
                api_base=sandbox_url,
                callback_token=DEFAULT_CALLBACK_TOKEN,
                encoding_aes_key=DEFAULT_ENCODING_AES_KEY,
            )
        },
    )


def _describe(record: dict[str, Any]) -> str:
    status = record["status"]
    if status == "queued" and record.get("attempts"):
        return f"retrying (attempt {record['attempts']} failed)"
    if status == "rejected":
        return f"rejected ({record.get('report_status')})"
    if status in ("failed", "dead"):
        return f"{status} ({record.get('last_errcode')} {record.get('last_category')})"
    return str(status)


def _table(rows: list[tuple[Sample, dict[str, Any] | None]], elapsed: float) -> Table:
    table = Table(title=f"wxgate demo — {elapsed:4.1f} s", expand=False)
    for column in ("touser", "template_id", "status", "msgid", "expected"):
        table.add_column(column)
    for sample, record in rows:
        if record is None:
            table.add_row(sample.touser, sample.template_id, "…", "", sample.expect)
            continue
        style = STYLE.get(record["status"], "white")
        table.add_row(
            sample.touser,
            sample.template_id,
            f"[{style}]{_describe(record)}[/{style}]",
            str(record.get("msgid") or ""),
            sample.expect,
        )
    return table


async def _post_all(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> list[str]:
    ids = []
    for sample in SAMPLES:
        body = {"touser": sample.touser, "template_id": sample.template_id, "data": sample.data}
        async with session.post(f"{base}/v1/messages", json=body, headers=headers) as resp:
            answer = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"intake refused a demo message: {resp.status} {answer}")
            ids.append(answer["data"]["id"])
    return ids


async def _watch(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    ids: list[str],
    console: Console,
    deadline_s: float,
) -> list[dict[str, Any] | None]:
    """Redraw the table until every message is terminal or the deadline passes; the
    records as last seen."""
    started = time.monotonic()
    records: list[dict[str, Any] | None] = [None] * len(ids)
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            for i, message_id in enumerate(ids):
                async with session.get(f"{base}/v1/messages/{message_id}", headers=headers) as r:
                    records[i] = (await r.json())["data"]
            elapsed = time.monotonic() - started
            live.update(_table(list(zip(SAMPLES, records, strict=True)), elapsed))
            if all(rec is not None and rec["status"] in TERMINAL for rec in records):
                return records
            if elapsed > deadline_s:
                return records
            await asyncio.sleep(0.2)


async def run_demo(console: Console | None = None, deadline_s: float = 25.0) -> bool:
    """Run the demo; True when every sample ended as expected (`Sample.met_by`) in time."""
    console = console or Console()
    api_key = "wxg_demo_" + secrets.token_urlsafe(24)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="wxgate-demo-") as tmp:
        sandbox = SandboxServer(
            port=0, callback_url=f"{base}/wechat/callback/default", callback_mode="safe"
        )
        await sandbox.start()
        settings = demo_settings(Path(tmp) / "demo.db", port, sandbox.base_url, api_key)
        gateway = Gateway(settings)
        await gateway.start()
        assert gateway.app is not None
        http = await serve_in_background(gateway.app, "127.0.0.1", port)
        try:
            console.print(
                f"sandbox WeChat at {sandbox.base_url}; gateway at {base} "
                f"(SQLite file {settings.storage.sqlite_path})"
            )
            headers = {"Authorization": f"Bearer {api_key}"}
            async with aiohttp.ClientSession() as session:
                ids = await _post_all(session, base, headers)
                records = await _watch(session, base, headers, ids, console, deadline_s)
            stats = await _sandbox_stats(sandbox.base_url)
            console.print(
                f"sandbox saw {stats['token_fetches_total']} token fetch(es), "
                f"{stats['sends_total']} sends by errcode {stats['sends']}, "
                f"{stats['callbacks']['acknowledged']} reports acknowledged by the gateway"
            )
            missed = [
                s.touser for s, rec in zip(SAMPLES, records, strict=True) if not s.met_by(rec)
            ]
            if missed:
                console.print(f"[red]not as expected: {', '.join(missed)}[/red]")
            return not missed
        finally:
            await http.stop()
            await gateway.stop()
            await sandbox.stop()


async def _sandbox_stats(base_url: str) -> dict[str, Any]:
    from wxgate.sandbox.control import SandboxControl

    control = SandboxControl(base_url)
    try:
        return await control.stats()
    finally:
        await control.close()
