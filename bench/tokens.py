"""Case 5, token efficiency: 4 processes × 64 coroutines sending at once from cold.

Each process is a gateway's delivery side as `wxgate serve` builds it (storage,
its token store, one TokenManager and AccountClient per app), started with no
token anywhere; on one signal all 256 sends go out at once. The sandbox counts
the token fetches: one process should fetch, the others read its token from the
shared store. The processes run unpinned, so they really race.

Child: `python -m bench.tokens race CONFIG COROUTINES`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from bench.case import Bench, Case
from bench.payload import wechat_message
from bench.procs import Child, GatewayConfig, Storage, drop_redis_keys, go_signal, report
from bench.results import Spec, Target

APP = "default"


def _spec(engine: str) -> Spec:
    return Spec(
        f"tokens.{engine}",
        "5 tokens",
        f"wxgate, 4 processes × 64 coroutines from cold, {engine} store: token fetches",
        "fetches",
        Target("==", 1),
        chart="tokens",
    )


SPECS = (_spec("sqlite"), _spec("redis"))


async def _race(bench: Bench, engine: str) -> int:
    sizes = bench.sizes
    await bench.sandbox.control.reset()
    storage = Storage.fresh(bench.workdir, engine)
    config = GatewayConfig.write(bench.workdir, bench.sandbox.url, storage)
    args = ["race", str(config.path), str(sizes.token_coroutines)]
    try:
        children = [
            await Child.start(bench.workdir, "tokens", args, None)
            for _ in range(sizes.token_processes)
        ]
        for child in children:
            child.go()
        results = [await child.result() for child in children]
    finally:
        if engine == "redis":
            await drop_redis_keys(storage, bench.redis_url)
    stats = await bench.sandbox.control.stats()
    fetches = int(stats["token_fetches_total"])
    sent = sum(result["ok"] for result in results)
    bench.note("tokens", engine=engine, sends_ok=sent, token_fetches=stats["token_fetches"])
    if sent != sizes.token_processes * sizes.token_coroutines:
        raise RuntimeError(f"token race: only {sent} sends succeeded: {results}")
    return fetches


async def measure(bench: Bench) -> dict[str, float]:
    return {f"tokens.{engine}": await _race(bench, engine) for engine in bench.engines}


CASE = Case("tokens", SPECS, measure)


async def race(config_path: str, coroutines: int) -> dict[str, Any]:
    from wxgate.config import load_settings
    from wxgate.gateway import Gateway
    from wxgate.observability import configure_logging
    from wxgate.wechat.client import SendOk
    from wxgate.wechat.template import TemplateMessage

    configure_logging("WARNING", "json")
    gateway = Gateway(load_settings(config_path), role="api")
    await gateway.start()
    try:
        client = gateway.clients[APP]
        messages = [
            TemplateMessage.from_wechat(wechat_message(n)).with_client_msg_id(f"{os.getpid()}-{n}")
            for n in range(coroutines)
        ]
        await go_signal()
        answers = await asyncio.gather(*(client.send_template(m) for m in messages))
    finally:
        await gateway.stop()
    ok = sum(isinstance(answer, SendOk) for answer in answers)
    return {"ok": ok, "errors": [repr(a) for a in answers if not isinstance(a, SendOk)][:5]}


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["race"])
    parser.add_argument("config")
    parser.add_argument("coroutines", type=int)
    args = parser.parse_args()
    report(uvloop.run(race(args.config, args.coroutines)))


if __name__ == "__main__":
    main()
