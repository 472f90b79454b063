"""`wxgate demo`: the sandbox and a gateway in one process, a handful of messages, a live table.

Everything is real except WeChat: the gateway stores messages in a temporary
SQLite file, its worker sends them over HTTP to the sandbox, and the sandbox
reports delivery back to the gateway's signed, AES-encrypted callback. The
sample includes the sandbox's failing test openids, so each row of the table
ends the way docs/design.md, "Classification", says it should. The table fits 100
columns without folding an id, and log lines wait below it until it is done.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from wxgate.backends.base import Status
from wxgate.config import (
    AppSettings,
    DeliverySettings,
    LogSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    hash_api_key,
)
from wxgate.demo_checks import show_intake_checks
from wxgate.gateway import Gateway
from wxgate.sandbox.server import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_MINI_APPID,
    DEFAULT_MINI_SECRET,
    DEFAULT_SECRET,
    SandboxServer,
)
from wxgate.server import serve_in_background
from wxgate.styles import STATUS_STYLE
from wxgate.wechat.kinds import AccountKind

TERMINAL = frozenset({Status.DELIVERED, Status.REJECTED, Status.FAILED, Status.DEAD})


@dataclass(frozen=True, slots=True)
class Sample:
    touser: str
    template_id: str
    expect: str  # the expected outcome, as the table shows it
    data: dict[str, dict[str, str]]
    # The same, checked against the record: status, and errcode or report when given.
    status: Status = Status.DELIVERED
    errcode: int | None = None
    report_status: str | None = None
    # A subscribe kind: the app that sends it, its kind and fields (its template_id is
    # a label; the demo adds the template to the sandbox and sends with its real id).
    app: str = "default"
    kind: str = "template"
    fields: tuple[tuple[str, str], ...] = ()

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
MINI_APP = "mini"
# Library template 1001 (订单发货通知, one-time) with keywords 1, 2, 3 and 6 (an enum).
SUBSCRIBE_TEMPLATE = b"tid=1001&kidList=1&kidList=2&kidList=3&kidList=6"


def subscribe_samples() -> tuple[Sample, ...]:
    """A subscribe notification and a mini-program message, each after the user's popup."""
    data = {
        "character_string1": {"value": "SO2026112911"},
        "thing2": {"value": "蓝牙耳机"},
        "time3": {"value": "2026-11-29 10:30"},
        "enum_string6": {"value": "已发货"},
    }
    return (
        Sample(
            "oKate_demo",
            "sub:order_shipped",
            "delivered (subscribe)",
            data,
            report_status="success",
            kind="subscribe",
            fields=(("page", "https://shop.example.com/orders/11"),),
        ),
        Sample(
            "oLiam_demo",
            "mini:order_shipped",
            "delivered (mini program)",
            data,
            report_status="success",
            app=MINI_APP,
            kind="miniprogram",
            fields=(("page", "pages/order?id=12"), ("miniprogram_state", "trial")),
        ),
    )


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
        Status.REJECTED,
        report_status="failed:user block",
    ),
    Sample(
        "sysfail_frank",
        SHIPPED,
        "rejected: system failed",
        _order(6),
        Status.REJECTED,
        report_status="failed: system failed",
    ),
    Sample("invalid_grace", SHIPPED, "failed 40003 (RECIPIENT)", _order(7), Status.FAILED, 40003),
    Sample(
        "unfollowed_heidi", SHIPPED, "failed 43004 (RECIPIENT)", _order(8), Status.FAILED, 43004
    ),
    Sample("refused_ivan", SHIPPED, "failed 43101 (RECIPIENT)", _order(9), Status.FAILED, 43101),
    Sample(
        "oJudy_demo",
        "bad_retired_template",
        "failed 40037 (REQUEST)",
        _order(10),
        Status.FAILED,
        40037,
    ),
    *subscribe_samples(),
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
            ),
            MINI_APP: AppSettings(
                appid=DEFAULT_MINI_APPID,
                secret=DEFAULT_MINI_SECRET,
                kind=AccountKind.MINIPROGRAM,
                api_base=sandbox_url,
                callback_token=DEFAULT_CALLBACK_TOKEN,
                encoding_aes_key=DEFAULT_ENCODING_AES_KEY,
            ),
        },
    )


def _describe(record: dict[str, Any]) -> str:
    status = Status(record["status"])
    if status is Status.QUEUED and record.get("attempts"):
        return f"retrying (attempt {record['attempts']} failed)"
    if status is Status.REJECTED:
        return f"rejected ({record.get('report_status')})"
    if status in (Status.FAILED, Status.DEAD):
        return f"{status} ({record.get('last_errcode')} {record.get('last_category')})"
    return str(status)


def status_table(rows: list[tuple[Sample, dict[str, Any] | None]], elapsed: float) -> Table:
    """Ids whole on one line (no_wrap), the prose columns wrapped to what is left:
    the five columns are ~120 characters wide unwrapped, a terminal often 80-100."""
    table = Table(
        title=f"wxgate demo — {elapsed:4.1f} s",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("touser", no_wrap=True)
    table.add_column("template_id", no_wrap=True)
    table.add_column("status")
    table.add_column("msgid", no_wrap=True)
    table.add_column("expected")
    for sample, record in rows:
        if record is None:
            status, msgid = Text("…"), ""
        else:
            status = Text(_describe(record), style=STATUS_STYLE[Status(record["status"])])
            msgid = str(record.get("msgid") or "")
        table.add_row(
            Text(sample.touser), Text(sample.template_id), status, msgid, Text(sample.expect)
        )
    return table


class _Holder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held_log_lines() -> Iterator[None]:
    """Log lines (the worker's warnings) are held, then written in order when the block
    ends: written while the live table redraws, they would land inside it."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    holder = _Holder()
    root.handlers[:] = [holder]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        for record in holder.records:
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


async def _post_all(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], real_ids: dict[str, str]
) -> list[str]:
    ids = []
    for sample in SAMPLES:
        template_id = real_ids.get(sample.template_id, sample.template_id)
        body = {"touser": sample.touser, "template_id": template_id, "data": sample.data}
        body.update(app=sample.app, kind=sample.kind, **dict(sample.fields))
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
            live.update(status_table(list(zip(SAMPLES, records, strict=True)), elapsed))
            done = all(rec is not None and Status(rec["status"]) in TERMINAL for rec in records)
            if done or elapsed > deadline_s:
                break
            await asyncio.sleep(0.2)
    if not console.is_terminal:
        console.line()  # rich ends a file's last render without one
    return records


async def _summary(
    console: Console, sandbox_url: str, records: list[dict[str, Any] | None]
) -> bool:
    """What the sandbox saw, and whether every sample ended as expected."""
    stats = await _sandbox_stats(sandbox_url)
    console.print(
        f"sandbox saw {stats['token_fetches_total']} token fetch(es), "
        f"{stats['sends_total']} sends by errcode {stats['sends']}, "
        f"{stats['callbacks']['acknowledged']} reports acknowledged by the gateway"
    )
    missed = [s.touser for s, rec in zip(SAMPLES, records, strict=True) if not s.met_by(rec)]
    if missed:
        console.print(f"not as expected: {', '.join(missed)}", style="red")
    return not missed


async def _send_and_watch(
    base: str, api_key: str, console: Console, deadline_s: float, real_ids: dict[str, str]
) -> list[dict[str, Any] | None]:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession() as session:
        ids = await _post_all(session, base, headers, real_ids)
        records = await _watch(session, base, headers, ids, console, deadline_s)
        await _print_grants(session, base, headers, console, real_ids)
        return records


async def _grant_subscribers(sandbox: SandboxServer) -> dict[str, str]:
    """Each subscribe sample's template added to its account, and its user's popup
    played (twice for the official account's: one grant is left after the send);
    label -> real template id."""
    from wxgate.sandbox.control import SandboxControl

    real_ids: dict[str, str] = {}
    control = SandboxControl(sandbox.base_url)
    try:
        for sample in SAMPLES:
            if sample.kind == "template":
                continue
            appid = DEFAULT_MINI_APPID if sample.app == MINI_APP else DEFAULT_APPID
            account = sandbox.wechat.account(appid)
            real_ids[sample.template_id] = account.subscribe_templates.add(SUBSCRIBE_TEMPLATE)
            for _ in range(1 if sample.app == MINI_APP else 2):
                await control.popup(appid, sample.touser, real_ids[sample.template_id])
        await control.wait_for_callbacks()
    finally:
        await control.close()
    return real_ids


async def _print_grants(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    console: Console,
    real_ids: dict[str, str],
) -> None:
    """The grant ledger of each subscribe sample's user, after its send."""
    for sample in SAMPLES:
        if sample.kind == "template":
            continue
        url = f"{base}/v1/grants?app={sample.app}&touser={sample.touser}"
        async with session.get(url, headers=headers) as resp:
            items = (await resp.json())["data"]["items"]
        left = sum(item["one_time"] for item in items)
        console.print(
            f"grants of {sample.touser} in {sample.app} ({sample.template_id}): "
            f"{left} one-time send(s) left after the send"
        )


async def run_demo(
    console: Console | None = None, deadline_s: float = 25.0, keep: bool = False
) -> bool:
    """Run the demo; True when every sample ended as expected (`Sample.met_by`) in time.
    With `keep`, the gateway and the sandbox then stay up (for the web console) until
    the task is cancelled, as Ctrl-C does."""
    console = console or Console()
    api_key = "wxg_demo_" + secrets.token_urlsafe(24)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="wxgate-demo-") as tmp:
        sandbox = SandboxServer(
            port=0,
            callback_url=f"{base}/wechat/callback/default",
            miniprogram_callback_url=f"{base}/wechat/callback/{MINI_APP}",
            callback_mode="safe",
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
            console.print(f"web console: {base}/ui", soft_wrap=True)
            console.print(f"API key to sign in with: {api_key}", soft_wrap=True)
            with held_log_lines():
                real_ids = await _grant_subscribers(sandbox)
                records = await _send_and_watch(base, api_key, console, deadline_s, real_ids)
                summed_up = await _summary(console, sandbox.base_url, records)
                ok = await show_intake_checks(console, gateway, base, api_key) and summed_up
            if keep:
                console.print(f"still serving {base}/ui; Ctrl-C stops", soft_wrap=True)
                await _until_stop_signal()
                console.print("demo stopped")
            return ok
        finally:
            await http.stop()
            await gateway.stop()
            await sandbox.stop()


async def _until_stop_signal() -> None:
    """Until SIGINT (Ctrl-C) or SIGTERM. The handlers are the loop's own, so they hold
    even where the process was started with SIGINT ignored (a shell's background job,
    some supervisors and test runners pass that on), in which case Python installs no
    KeyboardInterrupt and asyncio no Ctrl-C handler of its own."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _sandbox_stats(base_url: str) -> dict[str, Any]:
    from wxgate.sandbox.control import SandboxControl

    control = SandboxControl(base_url)
    try:
        return await control.stats()
    finally:
        await control.close()
