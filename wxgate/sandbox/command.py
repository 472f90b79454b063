"""The sandbox's command (`wxgate sandbox`, `python -m wxgate.sandbox`): options to
`server.run`, a config error as one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import typer

from wxgate.sandbox.config import CALLBACK_MODES
from wxgate.sandbox.errors import SandboxConfigError
from wxgate.sandbox.server import run


def sandbox_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8081, help="Port to listen on (0: any free port)."),
    callback_url: str | None = typer.Option(
        None, help="Where the default account's TEMPLATESENDJOBFINISH reports go."
    ),
    callback_mode: str = typer.Option(
        "plain", help="How reports are sent: plain, or safe (AES-encrypted)."
    ),
    config: str | None = typer.Option(
        None, help="TOML file of extra accounts (appid, secret, callback_url, ...)."
    ),
    token_ttl: int = typer.Option(7200, min=1, help="expires_in of new access tokens, seconds."),
    port_file: str | None = typer.Option(
        None, help="Write the bound port to this file once listening (useful with --port 0)."
    ),
) -> None:
    """Run a local imitation of the WeChat API (tokens, template/send, callbacks, faults)."""
    if callback_mode not in CALLBACK_MODES:
        raise typer.BadParameter("must be plain or safe", param_hint="--callback-mode")
    try:
        run(
            host,
            port,
            callback_url,
            Path(config) if config else None,
            callback_mode,  # type: ignore[arg-type]  # checked against CALLBACK_MODES above
            Path(port_file) if port_file else None,
            token_ttl,
        )
    except SandboxConfigError as exc:
        typer.echo(f"sandbox: {exc}", err=True)
        raise typer.Exit(2) from exc
