"""A three-primary Redis Cluster on loopback, for the tests (not collected by pytest).

Three `redis-server --cluster-enabled yes` nodes on free ports, each with a
directory of its own (nodes.conf and the AOF: `appendonly yes`, `appendfsync
always`, so a primary killed and started again loses nothing), joined by
`redis-cli --cluster create ... --cluster-replicas 0`. `node_argv` starts one node;
the chaos stack starts the same nodes as its own services (tests/chaos/stack.py).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PRIMARIES = 3
BUS_OFFSET = 10_000  # Redis Cluster's bus listens on port + 10000
START_TIMEOUT_S = 60.0


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = getattr(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True), "prctl", None)


def _stop_with_parent() -> None:
    """In the forked child, before exec: SIGTERM the node when the test process dies,
    so that a test run killed outright (a CI timeout, SIGKILL) leaves no redis-server
    behind; the normal path still stops the nodes itself. The function pointer is looked
    up before the fork, so the child only makes the one system call."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def cluster_missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_node_ports(count: int = PRIMARIES) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + BUS_OFFSET < 65536 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def node_argv(port: int, directory: Path) -> tuple[str, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    return (
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
        "--cluster-node-timeout", "2000", "--dir", str(directory),
        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        "--protected-mode", "no", "--daemonize", "no",
    )  # fmt: skip


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def answers(port: int) -> bool:
    return _cli(port, "ping").strip() == "PONG"


def cluster_ok(ports: list[int]) -> bool:
    """Every node says cluster_state:ok and sees every other."""
    for port in ports:
        info = _cli(port, "cluster", "info")
        if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(ports)}" not in info:
            return False
    return True


def owner_of(ports: list[int], tag: str) -> int:
    """The index in `ports` of the primary serving the slot of hash tag `tag`."""
    slot = int(_cli(ports[0], "cluster", "keyslot", tag).strip())
    for index, port in enumerate(ports):
        if _owns(port, slot):
            return index
    raise RuntimeError(f"no node serves slot {slot}")


def _owns(port: int, slot: int) -> bool:
    myself = next(line for line in _cli(port, "cluster", "nodes").splitlines() if "myself" in line)
    for part in myself.split()[8:]:
        low, _, high = part.partition("-")
        if low.isdigit() and int(low) <= slot <= int(high or low):
            return True
    return False


def wait_for(check: object, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    ends = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > ends:
            raise RuntimeError(f"the Redis Cluster did not come up: no {what}")
        time.sleep(0.1)


def create(ports: list[int]) -> None:
    """Join the started nodes into one cluster, slots shared evenly; wait until it is ok."""
    for port in ports:
        wait_for(lambda port=port: answers(port), f"PING answer on port {port}")
    nodes = [f"127.0.0.1:{port}" for port in ports]
    done = subprocess.run(
        ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")
    wait_for(lambda: cluster_ok(ports), "cluster_state:ok on every node")


@contextmanager
def running_cluster(workdir: Path) -> Iterator[list[int]]:
    """A started three-primary cluster; its node ports. Stopped (SIGTERM) on exit."""
    ports = free_node_ports()
    processes = []
    try:
        for port in ports:
            log = (workdir / f"redis-{port}.log").open("ab")
            argv = node_argv(port, workdir / f"node-{port}")
            processes.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=log, cwd=workdir, preexec_fn=_stop_with_parent
                )
            )
            log.close()
        create(ports)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_SHARED: list[str] = []


def shared_cluster_url() -> str:
    """The seed URL of one cluster shared by every test of this process: started on
    first use (in a temporary directory), stopped when the process exits."""
    if not _SHARED:
        stack = ExitStack()
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redis-cluster-")))
        ports = stack.enter_context(running_cluster(workdir))
        atexit.register(stack.close)
        _SHARED.append(f"redis://127.0.0.1:{ports[0]}/0")
    return _SHARED[0]
