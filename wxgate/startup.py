"""What keeps a gateway from starting, each said in one line naming the setting to change.

`startup_problems` finds what can be known without starting: `config check` prints
it and `serve` refuses to start on it. `StartupError` is what `serve` meets anyway
while it starts (a SQLite file another process keeps locked, a disk that went away),
said the same way by `startup_error`.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from redis.connection import parse_url

from wxgate.backends.sqlite_schema import SchemaVersionError, stored_version
from wxgate.config import AppSettings, Settings
from wxgate.wechat.callback import aes_key

SQLITE_PATH = "storage.sqlite_path"
NO_APP = "apps: no app configured; add an [apps.<name>] section"
# What the gateway can meet while it starts, besides a taken port (ListenError):
# storage that will not open, and settings that only fail when used.
STARTUP_FAILURES = (sqlite3.Error, OSError, ValueError)


class StartupError(Exception):
    """The gateway could not start; the message is one line naming the setting."""


def startup_problems(settings: Settings) -> list[str]:
    """Every problem that would stop `settings` from starting a gateway, one line each."""
    problems = [] if settings.apps else [NO_APP]
    for name, app in settings.apps.items():
        problems.extend(_aes_key_problems(name, app))
    problems.extend(_redis_url_problems(settings.storage.redis_url))
    if settings.storage.backend == "sqlite":
        problems.extend(_sqlite_problems(Path(settings.storage.sqlite_path)))
    return problems


def startup_error(settings: Settings, exc: BaseException) -> StartupError:
    """One of STARTUP_FAILURES, met while starting, as one line naming the setting."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, sqlite3.Error) and settings.storage.backend == "sqlite":
        return StartupError(f"{SQLITE_PATH}: cannot open {settings.storage.sqlite_path}: {reason}")
    return StartupError(f"cannot start: {reason}")


def _aes_key_problems(name: str, app: AppSettings) -> list[str]:
    key = app.encoding_aes_key.get_secret_value()
    if not key:
        return []
    try:
        aes_key(key)
    except ValueError as exc:
        return [f"apps.{name}.encoding_aes_key: {exc}"]
    return []


def _redis_url_problems(url: str) -> list[str]:
    # Read even for SQLite: the log scrubber takes the password from it at start.
    try:
        parse_url(url)
    except ValueError as exc:  # its text names the part at fault, never the password
        return [f"storage.redis_url: {exc}"]
    return []


def _sqlite_problems(path: Path) -> list[str]:
    """The file's directory must let this user create files (SQLite keeps its WAL and
    shared-memory files beside the database); an existing file must be a wxgate
    database this wxgate can read."""
    directory = path.parent
    if not directory.exists():
        return [f"{SQLITE_PATH}: the directory {directory} does not exist; create it first"]
    if not directory.is_dir():
        return [f"{SQLITE_PATH}: {directory} is not a directory"]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [
            f"{SQLITE_PATH}: the directory {directory} is not writable by this user "
            "(SQLite writes its journal files beside the database)"
        ]
    if not path.exists():
        return []  # the gateway creates it
    if not path.is_file():
        return [f"{SQLITE_PATH}: {path} is not a file"]
    if not os.access(path, os.R_OK | os.W_OK):
        return [f"{SQLITE_PATH}: {path} is not readable and writable by this user"]
    return _schema_problems(path)


def _schema_problems(path: Path) -> list[str]:
    """Read-only: a file this wxgate cannot take as it is, without changing it."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if ("meta",) in tables.fetchall():
                stored_version(conn)
    except SchemaVersionError as exc:
        return [f"{SQLITE_PATH}: {path} was written by a newer wxgate: {exc}"]
    except sqlite3.DatabaseError as exc:
        return [f"{SQLITE_PATH}: {path} is not a SQLite database wxgate can read ({exc})"]
    return []
