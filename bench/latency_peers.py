"""Case 7b, latency peers: what a Python team runs instead, against the same delayed sandbox.

With every send answered `--latency-ms` late (30 by default), beside the latency
case's raw client and wxgate:

- wechatpy sequential, and 16 threads sharing one `WeChatClient` (the peer case's
  child, `bench/peer.py`, with counts sized for the delay);
- Celery 5 with a Redis broker calling wechatpy, as it is deployed: the queue is filled
  with one task per message first, then `celery worker` (on the measured core) empties
  it, with the default prefork pool (one process per core) and with a 64-thread pool;
  the rate runs from the sandbox's first send to its last. Each run uses a queue and
  a key prefix of its own on the bench's Redis and deletes its keys afterwards.

Child, Celery side: `python -m bench.latency_peers fill COUNT` (the producer), and the
app `bench.latency_peers` for `celery worker`; the sandbox URL, the broker URL, the
queue and the prefix travel in the environment.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench.case import Bench, Case
from bench.latency import delayed
from bench.peer import THREADS, _client
from bench.procs import MEASURED_CORE, _remember, _stop, pinned, run_child
from bench.results import Spec

CELERY_THREADS = 64
ENV_SANDBOX, ENV_BROKER, ENV_QUEUE, ENV_PREFIX = (
    "WXGATE_BENCH_SANDBOX",
    "WXGATE_BENCH_BROKER",
    "WXGATE_BENCH_QUEUE",
    "WXGATE_BENCH_PREFIX",
)

SPECS = (
    Spec("latency.wechatpy.sequential", "7b latency peers", "wechatpy, sequential", "msgs/s"),
    Spec(
        "latency.wechatpy.threads",
        "7b latency peers",
        f"wechatpy, {THREADS} threads, one client",
        "msgs/s",
    ),
    Spec(
        "latency.wechatpy.threads_fetches",
        "7b latency peers",
        f"wechatpy {THREADS} threads from cold: token fetches",
        "fetches",
        chart="tokens",
    ),
    Spec(
        "latency.celery.prefork",
        "7b latency peers",
        "Celery 5 + Redis broker + wechatpy, default prefork pool",
        "msgs/s",
    ),
    Spec(
        "latency.celery.threads",
        "7b latency peers",
        f"Celery 5 + Redis broker + wechatpy, {CELERY_THREADS}-thread pool",
        "msgs/s",
    ),
)


def _counts(bench: Bench) -> dict[str, int]:
    """Messages per run: about four seconds of each sender at 30 ms (quick: under one)."""
    if bench.sizes.latency_sends < 5_000:
        return {"sequential": 20, "threads": 200, "prefork": 40, "celery_threads": 200}
    return {"sequential": 120, "threads": 1_500, "prefork": 200, "celery_threads": 1_000}


async def _wechatpy(bench: Bench, mode: str, count: int) -> tuple[float, int]:
    threads = THREADS if mode == "threads" else 1
    async with delayed(bench, bench.latency_ms):
        args = ["send", bench.sandbox.url, mode, str(count), str(threads)]
        result, _ = await run_child(bench.workdir, "peer", args, MEASURED_CORE)
        fetches = int((await bench.sandbox.control.stats())["token_fetches_total"])
    rate = result["sent"] / result["seconds"]
    bench.note("latency_peers", sender=f"wechatpy {mode}", rate=rate, errors=result["errors"])
    return rate, fetches


def _celery_env(bench: Bench, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        ENV_SANDBOX: bench.sandbox.url,
        ENV_BROKER: bench.redis_url,
        ENV_QUEUE: f"{prefix}-queue",
        ENV_PREFIX: f"{prefix}:",
    }


async def _celery(bench: Bench, pool: str, count: int) -> float:
    prefix = f"wxgate-bench-celery-{secrets.token_hex(4)}"
    env = _celery_env(bench, prefix)
    log_path = bench.workdir / f"{prefix}.log"
    try:
        async with delayed(bench, bench.latency_ms):
            fill = [sys.executable, "-m", "bench.latency_peers", "fill", str(count)]
            filler = await asyncio.create_subprocess_exec(*fill, env=env)
            if await filler.wait() != 0:
                raise RuntimeError("the Celery producer failed")
            command = [sys.executable, "-m", "celery", "-A", "bench.latency_peers", "worker",
                       "-Q", env[ENV_QUEUE], "--loglevel", "WARNING", "--without-gossip",
                       "--without-mingle", "--without-heartbeat", "--pool", pool]  # fmt: skip
            if pool == "threads":
                command += ["--concurrency", str(CELERY_THREADS)]
            command = pinned(command, MEASURED_CORE)
            _remember(f"celery worker --pool {pool}", command, bench.workdir)
            with log_path.open("wb") as log:
                worker = await asyncio.create_subprocess_exec(
                    *command, env=env, stdout=log, stderr=log, cwd=Path(__file__).parent.parent
                )
            try:
                timeout = 120 + count / 10
                started = await bench.sandbox.wait_for_sends(1, timeout, poll_s=0.005)
                finished = await bench.sandbox.wait_for_sends(count, timeout, poll_s=0.01)
            except TimeoutError as exc:
                raise RuntimeError(f"{exc}; {log_path.read_text()[-2000:]}") from None
            finally:
                await _stop(worker)
    finally:
        await _drop_keys(bench.redis_url, env[ENV_PREFIX])
    rate = (count - 1) / (finished - started)
    bench.note("latency_peers", sender=f"celery {pool}", rate=rate, messages=count)
    return rate


async def _drop_keys(redis_url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def measure(bench: Bench) -> dict[str, float]:
    counts = _counts(bench)
    sequential, _ = await _wechatpy(bench, "sequential", counts["sequential"])
    threads, fetches = await _wechatpy(bench, "threads", counts["threads"])
    figures = {
        "latency.wechatpy.sequential": sequential,
        "latency.wechatpy.threads": threads,
        "latency.wechatpy.threads_fetches": fetches,
    }
    if "redis" in bench.engines:  # the broker is the bench's Redis
        figures["latency.celery.prefork"] = await _celery(bench, "prefork", counts["prefork"])
        threaded = await _celery(bench, "threads", counts["celery_threads"])
        figures["latency.celery.threads"] = threaded
    return figures


CASE = Case("latency_peers", SPECS, measure)


# -- the Celery app (imported by `celery -A bench.latency_peers worker` and by `fill`) --------


def _celery_app() -> Any:
    from celery import Celery

    queue = os.environ.get(ENV_QUEUE, "wxgate-bench")
    app = Celery("wxgate_bench", broker=os.environ.get(ENV_BROKER, "redis://127.0.0.1:6379/0"))
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        broker_transport_options={"global_keyprefix": os.environ.get(ENV_PREFIX, "")},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = _celery_app() if ENV_QUEUE in os.environ else None
_wechat: Any = None


def _send(n: int) -> None:
    """One message, as a Celery task would send it: one wechatpy client per process."""
    global _wechat
    from bench.payload import DATA, TEMPLATE_ID, URL_PREFIX, openid

    if _wechat is None:
        _wechat = _client(os.environ[ENV_SANDBOX])
    _wechat.message.send_template(openid(n), TEMPLATE_ID, DATA, url=f"{URL_PREFIX}{n}")


send = app.task(name="wxgate_bench.send")(_send) if app is not None else None


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "fill" or send is None:
        raise SystemExit("usage: python -m bench.latency_peers fill COUNT (with the environment)")
    started = time.monotonic()
    for n in range(int(sys.argv[2])):
        send.delay(n)
    print(f"queued {sys.argv[2]} tasks in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
