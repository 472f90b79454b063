"""Is the sandbox ever the bottleneck? Sandbox capacity against one aiohttp client.

The sandbox runs as a process pinned to core 0. On core 1, first one aiohttp
client process (uvloop, keep-alive, 64 concurrent template/send calls with one
cached token, each answer parsed) runs for N seconds: its sends/s is what one
client process can issue. Then raw load generators (uvloop + httptools, 64
keep-alive connections each, no JSON work) run on core 1 to saturate the
sandbox: their combined sends/s is the sandbox's capacity on one core. Each
round starts from a reset sandbox; the script prints the median of the rounds
and the ratio capacity / client, which must be at least 2. Because other work
on the machine skews wall-clock rates, it also prints sends per CPU-second of
the client and of the sandbox (from /proc and process_time) and their ratio.

    .venv/bin/python -m bench.sandbox_vs_client --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bench.ceiling import SEND_PATH, WARMUP_S, send_for
from bench.payload import template_send_body
from bench.procs import cpu_seconds

SANDBOX_CORE = "0"
CLIENT_CORE = "1"
APPID = "wxsandbox000000001"
SECRET = "sandbox-secret"


# -- the raw load generator (to find the sandbox's capacity) ------------------------------


class _RawConnection(asyncio.Protocol):
    """Keep-alive connection that sends the next request as soon as an answer is complete."""

    def __init__(self, host: str, path: bytes, state: dict[str, Any]) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._host = host.encode()
        self._path = path
        self._state = state
        self._transport: asyncio.Transport | None = None
        self._ok = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._send()

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._ok = body.startswith(b'{"errcode":0,')

    def on_message_complete(self) -> None:
        state = self._state
        if time.monotonic() >= state["counting_from"]:
            state["ok" if self._ok else "errors"] += 1
        if time.monotonic() < state["stop_at"]:
            self._send()
        elif self._transport is not None:
            self._transport.close()

    def _send(self) -> None:
        state = self._state
        state["n"] += 1
        body = template_send_body(state["client"], state["n"])
        assert self._transport is not None
        self._transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self._path, self._host, len(body), body)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        state["open"] -= 1
        if state["open"] == 0 and not state["closed"].done():
            state["closed"].set_result(None)


async def _raw_client(url: str, token: str, seconds: float, connections: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    state: dict[str, Any] = {
        "ok": 0,
        "errors": 0,
        "n": 0,
        "client": f"r{os.getpid()}",
        "counting_from": start + WARMUP_S,
        "stop_at": start + WARMUP_S + seconds,
        "open": connections,
        "closed": loop.create_future(),
    }
    path = f"{SEND_PATH}?access_token={token}".encode()
    for _ in range(connections):
        await loop.create_connection(lambda: _RawConnection(host, path, state), host, int(port))
    await asyncio.wait_for(state["closed"], seconds + 30)
    return {"sends": state["ok"], "errors": state["errors"]}


def _client_main(args: argparse.Namespace) -> None:
    import uvloop

    run = send_for if args.role == "aiohttp" else _raw_client
    result = uvloop.run(run(args.url, args.token, args.seconds, args.concurrency))
    print(json.dumps(result))


# -- the driver ------------------------------------------------------------------------


def _http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    # Loopback http only: the URL is the sandbox this script started.
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.load(answer)


def _start_sandbox(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    command = [sys.executable, "-m", "wxgate.sandbox", "--port", "0", "--port-file", str(port_file)]
    process = subprocess.Popen(["taskset", "-c", SANDBOX_CORE, *command], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the sandbox did not start")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port_file.read_text().strip()}"


def _run_clients(
    role: str, url: str, token: str, args: argparse.Namespace, n: int
) -> list[dict[str, Any]]:
    command = [
        "taskset", "-c", CLIENT_CORE, sys.executable, "-m", "bench.sandbox_vs_client",
        "--role", role, "--url", url, "--token", token,
        "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
    ]  # fmt: skip
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(n)]
    results = [json.loads(p.communicate()[0]) for p in processes]
    errors = sum(r["errors"] for r in results)
    if errors:
        print(f"  warning: {errors} answers other than errcode 0 ({role})", file=sys.stderr)
    return results


def _fresh_token(url: str) -> str:
    """Reset the sandbox (empty inbox, zero stats) and fetch the one token of a phase."""
    _http_json(f"{url}/sandbox/reset", {})
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    return _http_json(f"{url}/cgi-bin/stable_token", body)["access_token"]


@dataclass(frozen=True)
class Round:
    client: float  # sends/s one aiohttp client process issued (wall clock)
    client_cpu: float  # its sends per CPU-second, which other load on the machine cannot skew
    capacity: float  # sends/s the sandbox answered under the raw load (wall clock)
    sandbox_cpu: float  # the sandbox's sends per CPU-second under that load


def _round(url: str, pid: int, args: argparse.Namespace) -> Round:
    [client] = _run_clients("aiohttp", url, _fresh_token(url), args, 1)
    token = _fresh_token(url)
    cpu_before = cpu_seconds(pid)
    load = _run_clients("raw", url, token, args, args.load_processes)
    cpu = cpu_seconds(pid) - cpu_before
    handled = _http_json(f"{url}/sandbox/stats")["sends_total"]  # warm-up included, like cpu
    return Round(
        client=client["sends"] / args.seconds,
        client_cpu=client["all_sends"] / client["cpu_s"],
        capacity=sum(r["sends"] for r in load) / args.seconds,
        sandbox_cpu=handled / cpu,
    )


def _driver(args: argparse.Namespace) -> None:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs taskset and at least 2 cores")
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as workdir:
        sandbox, url = _start_sandbox(Path(workdir))
        try:
            for i in range(args.rounds):
                r = _round(url, sandbox.pid, args)
                rounds.append(r)
                print(
                    f"round {i + 1}: client {r.client:,.0f}/s ({r.client_cpu:,.0f} per CPU-s); "
                    f"sandbox {r.capacity:,.0f}/s ({r.sandbox_cpu:,.0f} per CPU-s)"
                )
        finally:
            sandbox.terminate()
            sandbox.wait(10)
    _print_medians(rounds)


def _print_medians(rounds: list[Round]) -> None:
    m = {f.name: statistics.median(getattr(r, f.name) for r in rounds) for f in fields(Round)}
    print(f"median aiohttp client sends/s:         {m['client']:,.0f}")
    print(f"median sandbox capacity sends/s:       {m['capacity']:,.0f}")
    print(f"ratio capacity / client:               {m['capacity'] / m['client']:.2f}")
    print(f"median client sends per CPU-second:    {m['client_cpu']:,.0f}")
    print(f"median sandbox sends per CPU-second:   {m['sandbox_cpu']:,.0f}")
    print(f"ratio per CPU-second, sandbox/client:  {m['sandbox_cpu'] / m['client_cpu']:.2f}")
    print("required: both ratios at least 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--role", choices=["driver", "aiohttp", "raw"], default="driver")
    parser.add_argument("--url")
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.role == "driver":
        _driver(args)
    else:
        _client_main(args)


if __name__ == "__main__":
    main()
