"""The `wxgate` command line (typer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="wxgate: a reliable WeChat template-message gateway.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """wxgate: a reliable WeChat template-message gateway."""
