"""The `wxgate` command line (typer).

Three kinds of command: the processes (`serve`, `sandbox`, `demo`); what a
business system does, over the HTTP API (`send`, `send-batch`); and operator
tools that open the configured storage directly (`messages`, `dlq`, `token`,
`apps`), so they work on the gateway host even when the API is down. Output
never shows a secret: tokens are masked and AppSecrets are never read out. What
is not markup (config names such as `[apps.<name>]`, errors, user data) is
escaped or printed as plain `Text`, so rich never takes it for a style tag.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import orjson
import typer
import uvloop
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wxgate.backends.audit import AuditEntry
from wxgate.backends.base import Backend, DeadLetterFilter, ListFilter, MessageRecord, Status
from wxgate.commands import audit as audit_commands
from wxgate.commands import grants
from wxgate.commands import keys as keys_commands
from wxgate.commands.storage import app_name as _app_name
from wxgate.commands.storage import cli_actor
from wxgate.commands.storage import when as _when
from wxgate.commands.suppressions import suppressions_app
from wxgate.commands.templates import templates_app
from wxgate.commands.webhooks import webhooks_app
from wxgate.config import (
    DEFAULT_CONFIG_FILE,
    Role,
    Settings,
    check,
    find_config_file,
    hash_api_key,
    load_settings,
)
from wxgate.keyring import new_api_key
from wxgate.observability import configure_logging
from wxgate.sandbox.command import sandbox_command
from wxgate.starter_config import starter_toml
from wxgate.styles import STATUS_STYLE
from wxgate.wechat.tokenstore import CachedToken, mask

if TYPE_CHECKING:
    from wxgate.wechat.token import TokenManager

app = typer.Typer(help="wxgate: a reliable WeChat template-message gateway.", no_args_is_help=True)
messages_app = typer.Typer(help="Inspect stored messages.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue: list and replay.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens (always shown masked).", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
apps_app = typer.Typer(
    help="Configured apps (WeChat accounts) and their pauses.", no_args_is_help=True
)
app.add_typer(messages_app, name="messages")
app.add_typer(dlq_app, name="dlq")
app.add_typer(token_app, name="token")
app.add_typer(keys_commands.app, name="keys")
app.command("audit")(audit_commands.audit)
app.add_typer(config_app, name="config")
app.add_typer(apps_app, name="apps")
app.add_typer(templates_app, name="templates")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(grants.app, name="grants")
app.add_typer(webhooks_app, name="webhooks")

console = Console()
# Errors stay one line each however narrow the terminal, so they can be grepped.
err_console = Console(stderr=True, soft_wrap=True)
_T = TypeVar("_T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./wxgate.toml if present)."),
]
AppOption = Annotated[
    str | None, typer.Option("--app", help="App name (optional when one app is configured).")
]
ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Gateway base URL (default: from the config's server section)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="WXGATE_API_KEY", help="API key (or WXGATE_API_KEY)."),
]


@app.callback()
def main() -> None:
    """wxgate: a reliable WeChat template-message gateway."""


# -- shared plumbing ------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    err_console.print(escape(message), style="red")
    raise typer.Exit(code)


def _settings(config: Path | None, *, need_apps: bool = False) -> Settings:
    """The settings, or exit 2 with one line per problem. `need_apps`: a command that
    is useless without an app, where no file and no app usually means a first run."""
    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        lines = _validation_lines(exc) if isinstance(exc, ValidationError) else [str(exc)]
        for line in lines:
            err_console.print(escape(f"config: {line}"), style="red")
        raise typer.Exit(2) from exc
    if need_apps and not settings.apps and find_config_file(config) is None:
        _fail(
            "config: no wxgate.toml here and no --config given; `wxgate config init` "
            "writes a starter one (--sandbox: for the local sandbox)",
            2,
        )
    return settings


def _print_startup_problems(settings: Settings) -> bool:
    """Print what would keep a gateway from starting, one line each (`serve` and
    `config check` print the same lines); whether there was anything."""
    from wxgate.startup import startup_problems

    problems = startup_problems(settings)
    for problem in problems:
        err_console.print(escape(f"config: {problem}"), style="red")
    return bool(problems)


def _validation_lines(exc: ValidationError) -> list[str]:
    # The offending input is left out on purpose: it may be a secret.
    return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]


def _run(coro: Awaitable[_T]) -> _T:
    return uvloop.run(coro)  # type: ignore[arg-type]


async def _with_backend(settings: Settings, use: Callable[[Backend], Awaitable[_T]]) -> _T:
    from wxgate.clock import SystemClock
    from wxgate.gateway import make_backend

    backend = make_backend(settings, SystemClock())
    await backend.start()
    try:
        return await use(backend)
    finally:
        await backend.close()


async def _audit(backend: Backend, action: str, target: str, detail: str, now: float) -> None:
    """An operator action taken here, in the audit log (docs/scheduling.md)."""
    await backend.audit_log().record(AuditEntry(now, cli_actor(), action, target, detail))


# -- processes --------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOption = None,
    role: Annotated[
        Role, typer.Option(help="all: API and workers; api: HTTP only; worker: delivery only.")
    ] = "all",
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Override the port: server.port (all, api) or server.worker_port (worker).",
        ),
    ] = None,
) -> None:
    """Run the gateway: the HTTP API and/or the delivery workers."""
    from wxgate.gateway import ListenError
    from wxgate.gateway import serve as serve_gateway
    from wxgate.startup import StartupError

    settings = _settings(config, need_apps=True)
    if _print_startup_problems(settings):
        raise typer.Exit(2)
    configure_logging(settings.log.level, settings.log.format)
    try:
        _run(serve_gateway(settings, role=role, host=host, port=port))
    except ListenError as exc:
        _fail(f"serve: {exc}", 3)
    except StartupError as exc:
        _fail(f"serve: {exc}", 2)


app.command("sandbox")(sandbox_command)


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="stay up afterwards, for the web console, until Ctrl-C")
    ] = False,
) -> None:
    """Sandbox + gateway in one process: send sample messages and watch them settle."""
    from wxgate.demo import run_demo

    configure_logging("WARNING", "console")
    try:
        ok = _run(run_demo(console, keep=keep))
    except KeyboardInterrupt:
        console.print("demo stopped")
        return
    if not ok:
        err_console.print("[red]some messages did not end as expected in time[/red]")
        raise typer.Exit(1)


# -- what a business system does: the HTTP API ------------------------------------------------


def _server_url(settings: Settings, server: str | None) -> str:
    if server:
        return server.rstrip("/")
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  # a wildcard bind
    return f"http://{host}:{settings.server.port}"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _parse_data(pairs: list[str]) -> dict[str, dict[str, str]]:
    data = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--data")
        data[key] = {"value": value}
    return data


async def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=orjson.dumps(body), headers=headers | _JSON) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


_JSON = {"Content-Type": "application/json"}


def _print_answer(status: int, answer: Any) -> None:
    text = orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()
    (console if status < 400 else err_console).print(escape(f"HTTP {status}\n{text}"))
    if status >= 400:
        raise typer.Exit(1)


@app.command()
def send(
    touser: Annotated[str, typer.Option(help="Recipient openid.")],
    template_id: Annotated[str, typer.Option(help="Template id of the account.")],
    data: Annotated[
        list[str], typer.Option("--data", "-d", help="key=value, once per template field.")
    ],
    app_name: AppOption = None,
    url: Annotated[str | None, typer.Option(help="Click-through URL.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Send at most once per key.")] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    kind: Annotated[
        str | None, typer.Option(help="template (default), subscribe or miniprogram.")
    ] = None,
    page: Annotated[str | None, typer.Option(help="subscribe/miniprogram: page to open.")] = None,
    miniprogram_state: Annotated[
        str | None, typer.Option(help="miniprogram: developer, trial or formal.")
    ] = None,
    lang: Annotated[str | None, typer.Option(help="miniprogram: zh_CN, en_US, ...")] = None,
) -> None:
    """Send one message (a template message unless --kind says otherwise) through a
    running gateway."""
    settings = _settings(config)
    body: dict[str, Any] = {"touser": touser, "template_id": template_id, "data": _parse_data(data)}
    optional = {
        "app": app_name,
        "url": url,
        "idempotency_key": idempotency_key,
        "kind": kind,
        "page": page,
        "miniprogram_state": miniprogram_state,
        "lang": lang,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    status, answer = _run(
        _post(f"{_server_url(settings, server)}/v1/messages", body, _headers(api_key))
    )
    _print_answer(status, answer)


def _csv_recipients(path: Path) -> Iterator[dict[str, Any]]:
    """Rows as batch recipients: `touser`, optional `url`, every other column a data key."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "touser" not in reader.fieldnames:
            raise typer.BadParameter("the CSV needs a header row with a touser column")
        for row in reader:
            recipient: dict[str, Any] = {"touser": row.pop("touser")}
            if row.get("url"):
                recipient["url"] = row.pop("url")
            row.pop("url", None)
            recipient["data"] = {key: {"value": value} for key, value in row.items() if key}
            yield recipient


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@app.command("send-batch")
def send_batch(
    csv_file: Annotated[Path, typer.Option("--csv", exists=True, dir_okay=False, help="CSV file.")],
    template_id: Annotated[str, typer.Option(help="Template id of the account.")],
    app_name: AppOption = None,
    url: Annotated[str | None, typer.Option(help="Click-through URL for rows without one.")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Recipients per request.")
    ] = 1000,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Resending the same file with the same key sends nothing twice "
            "(default: derived from the file's content)."
        ),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Send one template to every row of a CSV (touser, data columns), with a progress bar."""
    import hashlib

    from rich.progress import Progress

    settings = _settings(config)
    recipients = list(_csv_recipients(csv_file))
    key = idempotency_key or "csv-" + hashlib.sha256(csv_file.read_bytes()).hexdigest()[:32]
    endpoint = f"{_server_url(settings, server)}/v1/messages/batch"
    shared: dict[str, Any] = {"template_id": template_id, "data": {}}
    for name, value in (("app", app_name), ("url", url)):
        if value is not None:
            shared[name] = value

    async def post_all() -> list[str]:
        batch_ids = []
        with Progress(console=console) as progress:
            task = progress.add_task("sending", total=len(recipients))
            for index, chunk in enumerate(_chunks(recipients, batch_size)):
                body = shared | {"recipients": chunk, "idempotency_key": f"{key}:{index}"}
                status, answer = await _post(endpoint, body, _headers(api_key))
                if status >= 400:
                    progress.stop()
                    _print_answer(status, answer)
                batch_ids.append(answer["data"]["batch_id"])
                progress.advance(task, len(chunk))
        return batch_ids

    batch_ids = _run(post_all())
    console.print(escape(f"accepted {len(recipients)} messages in batches: {', '.join(batch_ids)}"))


# -- operator tools: straight to the configured storage ---------------------------------------


def _records_table(records: list[MessageRecord], title: str) -> Table:
    table = Table(title=escape(title))
    for column in ("id", "app", "touser", "template_id", "status", "attempts", "error", "updated"):
        table.add_column(column, overflow="fold")
    for rec in records:
        error = f"{rec.last_errcode} {rec.last_category or ''}" if rec.last_errcode else ""
        table.add_row(
            *(Text(cell) for cell in (rec.id, rec.app, rec.touser, rec.template_id)),
            Text(rec.status.value, style=STATUS_STYLE[rec.status]),
            str(rec.attempts),
            Text(error),
            _when(rec.updated_at),
        )
    return table


def _status(value: str | None) -> Status | None:
    if value is None:
        return None
    try:
        return Status(value)
    except ValueError as exc:
        choices = ", ".join(s.value for s in Status)
        raise typer.BadParameter(f"one of {choices}", param_hint="--status") from exc


@messages_app.command("list")
def messages_list(
    status: Annotated[
        str | None, typer.Option(help="queued, sending, sent, delivered, ...")
    ] = None,
    app_name: AppOption = None,
    touser: Annotated[str | None, typer.Option(help="Only this recipient.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
) -> None:
    """The newest messages, filtered."""
    settings = _settings(config)
    flt = ListFilter(status=_status(status), app=app_name, touser=touser)
    page = _run(_with_backend(settings, lambda b: b.list(flt, limit)))
    console.print(_records_table(page.items, f"{len(page.items)} message(s), newest first"))


@messages_app.command("show")
def messages_show(message_id: str, config: ConfigOption = None) -> None:
    """One message with its history, as JSON."""
    from wxgate.api.schemas import record_json

    settings = _settings(config)
    record = _run(_with_backend(settings, lambda b: b.get(message_id)))
    if record is None:
        _fail(f"no message {message_id}", 1)
    console.print_json(orjson.dumps(record_json(record)).decode())


@dlq_app.command("list")
def dlq_list(
    app_name: AppOption = None,
    errcode: Annotated[int | None, typer.Option(help="Only this WeChat errcode.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
) -> None:
    """Dead letters (retries exhausted, or the app misconfigured), newest first."""
    from wxgate.operations import list_dead_letters

    settings = _settings(config)
    flt = DeadLetterFilter(app=app_name, errcode=errcode)
    items = _run(_with_backend(settings, lambda b: list_dead_letters(b, flt, limit)))
    console.print(_records_table(items, f"{len(items)} dead letter(s)"))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Message ids to replay.")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every dead letter matching the filters.")
    ] = False,
    app_name: AppOption = None,
    errcode: Annotated[int | None, typer.Option(help="Only this WeChat errcode.")] = None,
    config: ConfigOption = None,
) -> None:
    """Dead (or failed) messages back to the queue; lifts CONFIG pauses they cover."""
    from wxgate.clock import SystemClock
    from wxgate.operations import Replayed, replay_dead_letters, replay_messages

    if not ids and not replay_all:
        raise typer.BadParameter("give message ids, or --all with optional filters")
    settings = _settings(config)
    now = SystemClock().now()
    flt = DeadLetterFilter(app=app_name, errcode=errcode)
    target = " ".join(ids) if ids else f"dead letters app={app_name} errcode={errcode}"

    async def replay(backend: Backend) -> Replayed:
        if ids:
            done = await replay_messages(backend, ids, now)
        else:
            done = await replay_dead_letters(backend, flt, now)
        await _audit(backend, "replay", target, f"{done.replayed} replayed", now)
        return done

    result = _run(_with_backend(settings, replay))
    console.print(f"replayed {result.replayed} message(s)")
    if result.resumed:
        console.print(escape(f"lifted the CONFIG pause of: {', '.join(result.resumed)}"))


def _token_row(table: Table, app_name: str, token: CachedToken | None, now: float) -> None:
    if token is None:
        table.add_row(Text(app_name), "(none)", "", "")
        return
    left = "invalidated" if token.expires_at == 0 else f"{token.remaining(now):.0f} s"
    table.add_row(Text(app_name), mask(token.token), left, _when(token.fetched_at))


def _token_line(app_name: str, token: CachedToken, now: float) -> str:
    return f"{app_name}: {mask(token.token)}, valid for {token.remaining(now):.0f} s"


@token_app.command("show")
def token_show(app_name: AppOption = None, config: ConfigOption = None) -> None:
    """The cached access token of each app: masked, with its remaining lifetime."""
    from wxgate.clock import SystemClock

    settings = _settings(config)
    names = [_app_name(settings, app_name)] if app_name else sorted(settings.apps)

    async def load(backend: Backend) -> list[CachedToken | None]:
        store = backend.token_store()
        return [await store.load(name) for name in names]

    tokens = _run(_with_backend(settings, load))
    table = Table(title="access tokens (masked)")
    for column in ("app", "token", "remaining", "fetched"):
        table.add_column(column)
    now = SystemClock().now()
    for name, token in zip(names, tokens, strict=True):
        _token_row(table, name, token, now)
    console.print(table)


async def _token_manager_call(
    settings: Settings, app_name: str, use: Callable[[TokenManager], Awaitable[_T]]
) -> _T:
    from wxgate.gateway import token_manager
    from wxgate.wechat.client import WeChatHttp

    app_settings = settings.apps[app_name]

    async def with_manager(backend: Backend) -> _T:
        async with WeChatHttp(pool_size=2) as http:
            manager = token_manager(app_name, app_settings, backend.token_store(), http)
            try:
                return await use(manager)
            finally:
                await manager.close()

    return await _with_backend(settings, with_manager)


@token_app.command("refresh")
def token_refresh(
    app_name: AppOption = None,
    force: Annotated[
        bool, typer.Option(help="stable mode: force_refresh=true (≤ 20/day, ≥ 30 s apart).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Fetch a token now (stable mode returns the current one unless --force)."""
    from wxgate.clock import SystemClock
    from wxgate.wechat.errors import WeChatError

    settings = _settings(config)
    name = _app_name(settings, app_name)
    try:
        token = _run(_token_manager_call(settings, name, lambda m: m.refresh(force=force)))
    except WeChatError as exc:
        _fail(f"{name}: {exc}", 1)
    console.print(escape(_token_line(name, token, SystemClock().now())))


@token_app.command("set")
def token_set(
    expires_in: Annotated[int, typer.Option(min=1, help="Seconds the token stays valid.")],
    app_name: AppOption = None,
    config: ConfigOption = None,
) -> None:
    """external mode: store a token another system fetched (read from stdin, never argv)."""
    from wxgate.clock import SystemClock

    settings = _settings(config)
    name = _app_name(settings, app_name)
    value = sys.stdin.readline().strip()
    if not value:
        raise typer.BadParameter("pipe the token on stdin")
    token = _run(_token_manager_call(settings, name, lambda m: m.put_external(value, expires_in)))
    console.print(escape(_token_line(name, token, SystemClock().now())))


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate a config: one line per problem, never a secret. Exit 2 when `serve`
    would refuse it (the same lines), 1 when it would start but needs work."""
    settings = _settings(config, need_apps=True)
    refused = _print_startup_problems(settings)
    problems = check(settings)
    for problem in problems:
        err_console.print(escape(problem), style="yellow")
    if refused or problems:
        raise typer.Exit(2 if refused else 1)
    console.print(f"config ok: {len(settings.apps)} app(s), storage {settings.storage.backend}")


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Option(help="Where to write the file.")] = Path(
        DEFAULT_CONFIG_FILE
    ),
    sandbox: Annotated[
        bool, typer.Option(help="Ready for `wxgate sandbox` and its default account.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite the file if it exists.")] = False,
) -> None:
    """Write a commented starter config with a new API key (printed once; the file
    keeps only its hash). Without --sandbox, `config check` names what to fill in."""
    key = new_api_key()
    text = starter_toml(hash_api_key(key), sandbox=sandbox)
    try:
        # Owner-only: the file is where the AppSecret may end up.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL), 0o600)
    except FileExistsError:
        _fail(f"{path} exists; pass --force to overwrite it", 1)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}", 1)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    console.print(escape(f"wrote {path}"))
    console.print(f"API key (shown once; clients send it as Authorization: Bearer <key>):\n  {key}")
    next_step = "wxgate sandbox --callback-url http://127.0.0.1:8000/wechat/callback/default"
    if not sandbox:
        next_step = f"fill in {path}, then: wxgate config check --config {path}"
    console.print(escape(f"next: {next_step}"), soft_wrap=True)


@apps_app.command("list")
def apps_list(config: ConfigOption = None) -> None:
    """Configured apps with any pause in force (QUOTA until the reset, CONFIG until resumed)."""
    from wxgate.clock import SystemClock

    settings = _settings(config)
    now = SystemClock().now()
    pauses = _run(_with_backend(settings, lambda b: b.pauses(now)))
    table = Table(title="apps")
    for column in ("app", "appid", "token mode", "rate/s", "paused"):
        table.add_column(column)
    for name, app_settings in sorted(settings.apps.items()):
        pause = pauses.get(name)
        paused = "" if pause is None else f"{pause.reason} until {_when(pause.until) or 'resumed'}"
        table.add_row(
            Text(name),
            Text(app_settings.appid),
            app_settings.token_mode,
            f"{app_settings.rate_limit_per_s:g}",
            paused,
        )
    console.print(table)


@apps_app.command("resume")
def apps_resume(
    app_name: Annotated[str, typer.Argument(help="App name.")], config: ConfigOption = None
) -> None:
    """Lift an app's pause (after fixing its config)."""
    from wxgate.clock import SystemClock

    settings = _settings(config)
    name = _app_name(settings, app_name)
    now = SystemClock().now()

    async def resume(backend: Backend) -> bool:
        done = await backend.resume_app(name, now)
        await _audit(backend, "resume", name, "resumed" if done else "was not paused", now)
        return done

    resumed = _run(_with_backend(settings, resume))
    console.print(escape(f"{name}: {'resumed' if resumed else 'was not paused'}"))
