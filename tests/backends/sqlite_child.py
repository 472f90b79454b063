"""A separate process working on one SQLite file, for test_sqlite.py.

`churn PATH ACKS`: enqueue, lease and settle forever; after each call returns,
append what it acknowledged to ACKS (one line each), so a parent that SIGKILLs
this process knows what must have survived.
`lease PATH`: print "ready", wait for a line on stdin, lease until the queue is
empty, then print the leased ids as one JSON list.
`schema PATH AT`: wait until the epoch time AT, then create the engine's schema on a
connection of its own (so several processes switch one new file to WAL at the same
moment), then open the engine, enqueue one message and close.

Run as `python -m tests.backends.sqlite_child ...` from the repository root.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import sys
import time

import orjson

from wxgate.backends.base import Lease, NewMessage, Outcome, Settlement
from wxgate.backends.sqlite import SqliteBackend
from wxgate.backends.sqlite_schema import create_schema

LEASE_S = 0.5  # short, so the next life of this process re-leases what a kill left


class Acks:
    """Lines appended with one write(2) each, so a kill never leaves a torn line but the last."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *fields: object) -> None:
        os.write(self._fd, (" ".join(map(str, fields)) + "\n").encode())


async def churn(path: str, acks_path: str) -> None:
    backend = SqliteBackend(path)
    await backend.start()
    acks = Acks(acks_path)
    tag = f"{os.getpid()}"
    seq = itertools.count()

    async def enqueue(count: int) -> None:
        batch = [
            NewMessage("shop", {"touser": f"o-{tag}-{next(seq)}", "template_id": "t"})
            for _ in range(count)
        ]
        for message, answer in zip(batch, await backend.enqueue(batch, time.time()), strict=True):
            acks.write("E", answer.id, message.touser)

    while True:
        await asyncio.gather(enqueue(25), *(enqueue(1) for _ in range(8)))
        leases = await backend.lease_batch(tag, 20, LEASE_S, time.time())
        settlements = [_outcome(lease, n) for n, lease in enumerate(leases)]
        answers = await backend.settle(settlements, time.time())
        for settlement, ok in zip(settlements, answers, strict=True):
            if ok and settlement.outcome is not Outcome.RETRY:
                acks.write("S", settlement.lease.id, settlement.outcome.value, settlement.msgid)


def _outcome(lease: Lease, n: int) -> Settlement:
    """Mostly sent (with an int64 msgid above 2^53), some failed, some retried."""
    kind = n % 4
    if kind == 3:
        return Settlement(lease, Outcome.RETRY, next_attempt_at=time.time(), errcode=-1)
    if kind == 2:
        return Settlement(lease, Outcome.FAILED, errcode=43101, category="RECIPIENT")
    msgid = 2**53 + int.from_bytes(os.urandom(6), "big")
    return Settlement(lease, Outcome.SENT, msgid=msgid, errcode=0)


async def lease_all(path: str) -> None:
    backend = SqliteBackend(path)
    await backend.start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    leased: list[str] = []
    empty = 0
    while empty < 3:
        leases = await backend.lease_batch(f"child-{os.getpid()}", 3, 3600, time.time())
        leased += [lease.id for lease in leases]
        empty = 0 if leases else empty + 1
    await backend.close()
    print(orjson.dumps(leased).decode(), flush=True)


async def schema_at(path: str, at: str) -> None:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    while time.time() < float(at):  # spin: the processes must race within microseconds
        pass
    create_schema(conn, time.time())
    conn.close()
    backend = SqliteBackend(path)
    await backend.start()
    await backend.enqueue([NewMessage("shop", {"touser": f"o-{os.getpid()}"})], time.time())
    await backend.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    modes = {"churn": churn, "lease": lease_all, "schema": schema_at}
    asyncio.run(modes[mode](*args))
