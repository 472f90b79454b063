"""Case 2, the peer: wechatpy (PyPI) sending the same messages, pointed at the sandbox.

How a Python team sends template messages without a gateway: one `WeChatClient`,
`client.message.send_template(...)` in a loop, or the same client shared by a
16-thread pool. wechatpy's hook for another WeChat is the `API_BASE_URL`
attribute (an instance attribute here) for the business API; its token fetch has
the URL written into `fetch_access_token`, so that one method is overridden with
the same body and the sandbox's URL. Token fetches are counted by the sandbox.

Child: `python -m bench.peer send URL sequential|threads COUNT THREADS` (on the
measured core, like the gateway).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.case import Bench, Case
from bench.payload import DATA, TEMPLATE_ID, URL_PREFIX, openid
from bench.procs import MEASURED_CORE, await_go, report, run_child
from bench.results import Spec
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_SECRET

THREADS = 16

SPECS = (
    Spec(
        "peer.sequential",
        "2 peer",
        "wechatpy, sequential sends",
        "msgs/s",
        short="wechatpy sequential",
    ),
    Spec(
        "peer.sequential.per_cpu",
        "2 peer",
        "wechatpy, sequential, per CPU-second",
        "msgs/CPU-s",
        chart="per_cpu",
        short="wechatpy sequential",
    ),
    Spec("peer.threads", "2 peer", f"wechatpy, {THREADS}-thread pool, one client", "msgs/s"),
    Spec(
        "peer.threads_fetches",
        "2 peer",
        f"wechatpy {THREADS} threads from cold: token fetches",
        "fetches",
        chart="tokens",
    ),
)


async def _run(bench: Bench, mode: str) -> tuple[float, float, int]:
    await bench.sandbox.control.reset()
    count = bench.sizes.wechatpy_sends
    args = ["send", bench.sandbox.url, mode, str(count), str(THREADS)]
    result, _ = await run_child(bench.workdir, "peer", args, MEASURED_CORE)
    stats = await bench.sandbox.control.stats()
    fetches = int(stats["token_fetches_total"])
    bench.note("peer", mode=mode, errors=result["errors"], token_fetches=fetches)
    return result["sent"] / result["seconds"], result["sent"] / result["cpu_s"], fetches


async def measure(bench: Bench) -> dict[str, float]:
    sequential, sequential_per_cpu, _ = await _run(bench, "sequential")
    threaded, _, fetches = await _run(bench, "threads")
    return {
        "peer.sequential": sequential,
        "peer.sequential.per_cpu": sequential_per_cpu,
        "peer.threads": threaded,
        "peer.threads_fetches": fetches,
    }


CASE = Case("peer", SPECS, measure)


def _client(api_base: str) -> Any:
    from wechatpy import WeChatClient

    class SandboxWeChatClient(WeChatClient):  # type: ignore[misc]
        """wechatpy's client with WeChat's base URLs replaced by the sandbox's."""

        def __init__(self) -> None:
            super().__init__(DEFAULT_APPID, DEFAULT_SECRET)
            self.API_BASE_URL = f"{api_base}/cgi-bin/"

        def fetch_access_token(self) -> Any:
            return self._fetch_access_token(
                url=f"{api_base}/cgi-bin/token",
                params={
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret,
                },
            )

    return SandboxWeChatClient()


def _send_all(client: Any, count: int, threads: int) -> int:
    """Send messages 0 .. count - 1; how many wechatpy raised for."""
    from wechatpy.exceptions import WeChatClientException

    def send(n: int) -> int:
        try:
            client.message.send_template(openid(n), TEMPLATE_ID, DATA, url=f"{URL_PREFIX}{n}")
        except WeChatClientException:
            return 1
        return 0

    if threads <= 1:
        return sum(send(n) for n in range(count))
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(send, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["send"])
    parser.add_argument("url")
    parser.add_argument("mode", choices=["sequential", "threads"])
    parser.add_argument("count", type=int)
    parser.add_argument("threads", type=int)
    args = parser.parse_args()
    client = _client(args.url)
    threads = 1 if args.mode == "sequential" else args.threads
    await_go()
    started, cpu_started = time.monotonic(), time.process_time()
    errors = _send_all(client, args.count, threads)
    seconds, cpu_s = time.monotonic() - started, time.process_time() - cpu_started
    report({"sent": args.count - errors, "errors": errors, "seconds": seconds, "cpu_s": cpu_s})


if __name__ == "__main__":
    main()
