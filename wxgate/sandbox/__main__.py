"""`python -m wxgate.sandbox`: the same as `wxgate sandbox`."""

import typer

from wxgate.sandbox.command import sandbox_command

if __name__ == "__main__":
    typer.run(sandbox_command)
