"""Figures of the template registry and the suppression list (docs/templates.md).

    .venv/bin/python -m bench.registry memory             # bytes per entry, both engines
    .venv/bin/python -m bench.registry checks             # microseconds per message of each check
    .venv/bin/python -m bench.registry intake --rounds 2  # intake p99 at 2,000 req/s, check on/off

`memory`: 100,000 suppressed openids (28 characters, like WeChat's; `--entries N`)
added to one app on each engine: Redis MEMORY USAGE of the bucket hashes and what
`used_memory` drops by when they are deleted, the SQLite file's size before and
after (VACUUMed), per entry;
and the registry's bytes per template: its stored JSON, and the process's copy.

`intake`: a `--role api` gateway on SQLite whose registry holds 25 templates (the
account maximum, one of them the load's) and whose suppression list holds 100,000
openids, offered 2,000 single messages a second (bench.load paced, 64 connections);
the same with `template_check = "off"`, alternating, several rounds. Both runs
have the suppression check (one lookup per request).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.payload import TEMPLATE_ID, openid, wechat_message
from bench.procs import LOAD_CORE, Child, Gateway, GatewayConfig, Storage
from wxgate.backends.redis import RedisBackend
from wxgate.backends.redis_suppressions import BUCKETS
from wxgate.backends.sqlite import SqliteBackend
from wxgate.backends.suppressions import Suppression, SuppressionReason
from wxgate.backends.templates import RegisteredTemplate
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template_content import template_keys

REDIS_URL = "redis://127.0.0.1:6379/0"
ENTRIES = 100_000
CHUNK = 10_000
TEMPLATES = 25  # an account's maximum (45026 beyond it)
# The load's keys (bench.payload.DATA) as a template's content, as WeChat lists it.
CONTENT = (
    "商品：{{thing1.DATA}}\n时间：{{time2.DATA}}\n金额：{{amount3.DATA}}\n"
    "单号：{{character_string4.DATA}}\n"
)


def templates() -> list[RegisteredTemplate]:
    ids = [TEMPLATE_ID, *(f"{secrets.token_urlsafe(32)}" for _ in range(TEMPLATES - 1))]
    return [
        RegisteredTemplate(
            template_id,
            MessageKind.TEMPLATE,
            "订单发货提醒",
            CONTENT,
            tuple(template_keys(CONTENT)),
        )
        for template_id in ids
    ]


def entries(count: int = ENTRIES) -> list[Suppression]:
    """`count` suppressed openids, numbered like the load's recipients."""
    now = time.time()
    return [
        Suppression(openid(n), SuppressionReason.NOT_FOLLOWING, now, 43004) for n in range(count)
    ]


async def _add(backend: Any, app: str, items: list[Suppression]) -> None:
    store = backend.suppression_store()
    for start in range(0, len(items), CHUNK):
        await store.add(app, items[start : start + CHUNK])


async def redis_bytes_per_entry(count: int = ENTRIES) -> dict[str, float]:
    """MEMORY USAGE (SAMPLES 0: exact) of the app's buckets, and what `used_memory`
    drops by when they are deleted: the server is shared, so the delta of the adds
    would count other clients' buffers too."""
    prefix = f"bench-supp-{secrets.token_hex(4)}"
    client = aioredis.Redis.from_url(REDIS_URL)
    backend = RedisBackend(REDIS_URL, prefix=prefix)
    await backend.start()
    try:
        await _add(backend, "app", entries(count))
        usage = 0
        for bucket in range(BUCKETS):
            usage += await client.memory_usage(f"{prefix}:supp:app:{bucket}", samples=0) or 0
        encoding = await client.object("encoding", f"{prefix}:supp:app:0")
        full = (await client.info("memory"))["used_memory"]
    finally:
        await backend.close()
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    emptied = (await client.info("memory"))["used_memory"]
    await client.aclose()
    return {
        "redis.entries": count,
        "redis.bucket_encoding": encoding.decode() if isinstance(encoding, bytes) else encoding,
        "redis.memory_usage_bytes_per_entry": usage / count,
        "redis.freed_bytes_per_entry": (full - emptied) / count,
    }


async def sqlite_bytes_per_entry(workdir: Path, count: int = ENTRIES) -> dict[str, float]:
    path = workdir / "suppressions.db"
    backend = SqliteBackend(path, synchronous="NORMAL")
    await backend.start()
    try:
        await backend.database.write(lambda conn: conn.execute("SELECT 1").fetchall())
        before = path.stat().st_size
        await _add(backend, "app", entries(count))
    finally:
        await backend.close()
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.close()
    return {
        "sqlite.entries": count,
        "sqlite.file_bytes_per_entry": (path.stat().st_size - before) / count,
    }


def registry_bytes_per_template() -> dict[str, float]:
    made = templates()
    stored = statistics.mean(len(template.to_json()) for template in made)
    gc.collect()
    tracemalloc.start()
    snapshot = [RegisteredTemplate.from_json(template.to_json()) for template in made]
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(snapshot) == TEMPLATES
    return {
        "registry.stored_json_bytes_per_template": stored,
        "registry.process_bytes_per_template": size / TEMPLATES,
    }


async def memory(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wxgate-bench-registry-") as tmp:
        figures = registry_bytes_per_template()
        figures |= await sqlite_bytes_per_entry(Path(tmp), count)
        figures |= await redis_bytes_per_entry(count)
    return figures


# -- the checks' own cost --------------------------------------------------------------


async def _per_call_us(check: Any, messages: list[Any], rounds: int) -> tuple[float, float]:
    """(wall, CPU of this process) microseconds per call, one call at a time."""
    for message in messages[:100]:  # warm: the registry's first read, connections
        await check.check("default", [message])
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(rounds):
        await check.check("default", [messages[n % len(messages)]])
    wall_us = 1e6 * (time.perf_counter() - started) / rounds
    return wall_us, 1e6 * (time.process_time() - cpu) / rounds


async def checks(rounds: int = 5_000) -> dict[str, float]:
    """Microseconds per single message of each intake check, in this process: the
    template check (from its per-process copy), and the suppression check's lookup in
    a list of 100,000 on each engine. CPU-bound, so far steadier than a paced run on
    a shared machine."""
    from wxgate.api.suppression_check import SuppressionCheck
    from wxgate.api.template_check import TemplateCheck
    from wxgate.backends.base import NewMessage
    from wxgate.clock import SystemClock
    from wxgate.config import AppSettings, Settings

    messages = [NewMessage("default", wechat_message(n), digest="x") for n in range(1_000)]
    settings = Settings(apps={"default": AppSettings(appid="wx0", secret="s")})
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wxgate-bench-registry-") as tmp:
        storage = Storage.fresh(Path(tmp), "sqlite")
        await _seed(storage)
        sqlite = SqliteBackend(storage.sqlite_path, synchronous="NORMAL")
        await sqlite.start()
        try:
            template = TemplateCheck(settings, sqlite, SystemClock())
            figures["check.template_us"], figures["check.template_cpu_us"] = await _per_call_us(
                template, messages, rounds
            )
            suppression = SuppressionCheck(sqlite)
            wall, cpu = await _per_call_us(suppression, messages, rounds)
            figures["check.suppression_sqlite_us"], figures["check.suppression_sqlite_cpu_us"] = (
                wall,
                cpu,
            )
        finally:
            await sqlite.close()
    prefix = f"bench-checks-{secrets.token_hex(4)}"
    redis = RedisBackend(REDIS_URL, prefix=prefix)
    await redis.start()
    try:
        await _add(redis, "default", entries())
        suppression = SuppressionCheck(redis)
        wall, cpu = await _per_call_us(suppression, messages, rounds)
        figures["check.suppression_redis_us"], figures["check.suppression_redis_cpu_us"] = (
            wall,
            cpu,
        )
    finally:
        await redis.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        await client.aclose()
    return figures


# -- intake p99 ---------------------------------------------------------------------------


async def _seed(storage: Storage) -> None:
    backend = SqliteBackend(storage.sqlite_path, synchronous="NORMAL")
    await backend.start()
    try:
        now = time.time()
        await backend.template_store().replace("default", MessageKind.TEMPLATE, templates(), now)
        # Suppressed openids other than the load's (bench.payload.openid numbers them up).
        shifted = [
            Suppression(f"oSupp{n:07d}xxxxxxxxxxxxxxxxx", e.reason, e.since, e.errcode)
            for n, e in enumerate(entries())
        ]
        await _add(backend, "default", shifted)
    finally:
        await backend.close()


async def _paced_p99(workdir: Path, check: str, rate: int, seconds: float) -> dict[str, float]:
    storage = Storage.fresh(workdir, "sqlite")
    await _seed(storage)
    config = GatewayConfig.write(workdir, "http://127.0.0.1:9", storage)
    if check == "off":
        config.path.write_text(config.path.read_text() + 'template_check = "off"\n')
    gateway = await Gateway.start(config, "api", core=None)
    try:
        args = ["paced", gateway.url, str(rate), str(seconds), "64"]
        child = await Child.start(workdir, "load", args, LOAD_CORE, gateway.key)
        child.go()
        result = await child.result()
    finally:
        await gateway.stop()
    if result["errors"]:
        raise RuntimeError(f"{check}: {result['errors']} refused: {result['first_errors']}")
    return {"p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"]}


async def intake(rounds: int, rate: int, seconds: float) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="wxgate-bench-registry-") as tmp:
        for _ in range(rounds):
            for check in ("off", "on"):
                runs[check].append(await _paced_p99(Path(tmp), check, rate, seconds))
    return {
        f"intake.{check}.{figure}": statistics.median(run[figure] for run in results)
        for check, results in runs.items()
        for figure in ("p50_ms", "p99_ms")
    } | {"runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.registry")
    parser.add_argument("what", choices=("memory", "checks", "intake"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--entries", type=int, default=ENTRIES, help="memory: openids added")
    args = parser.parse_args(argv)
    if args.what == "memory":
        figures: dict[str, Any] = asyncio.run(memory(args.entries))
    elif args.what == "checks":
        figures = asyncio.run(checks())
    else:
        figures = asyncio.run(intake(args.rounds, args.rate, args.seconds))
    json.dump(figures, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
