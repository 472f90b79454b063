"""`python -m wxgate.sandbox`: the same as `wxgate sandbox`."""

import typer

from wxgate.cli import sandbox

if __name__ == "__main__":
    typer.run(sandbox)
