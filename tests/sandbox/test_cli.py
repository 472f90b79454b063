"""The sandbox as a process: `python -m wxgate.sandbox` and `wxgate sandbox`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.sandbox.helpers import WeChatCalls
from wxgate.sandbox.config import DEFAULT_SECRET

WXGATE = Path(sys.executable).with_name("wxgate")


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path) -> int:
    deadline = time.monotonic() + 60  # a poll: the sandbox starts slowly on busy cores
    while not port_file.exists():
        if process.poll() is not None:
            raise AssertionError(f"sandbox exited: {process.stderr.read()!r}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError("sandbox did not write its port file")
        time.sleep(0.02)
    return int(port_file.read_text())


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        port_file = tmp_path / f"port-{len(processes)}"
        process = subprocess.Popen(
            [*command, "--port", "0", "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        return process, _wait_for_port(process, port_file)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


async def test_module_serves_on_the_port_it_writes_and_stops_on_sigterm(start):
    process, port = start([sys.executable, "-m", "wxgate.sandbox"])
    async with aiohttp.ClientSession() as session:
        wechat = WeChatCalls(session, f"http://127.0.0.1:{port}")
        assert (await wechat.send(await wechat.token()))["errcode"] == 0
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    log = process.stderr.read().decode()  # type: ignore[union-attr]
    assert f"http://127.0.0.1:{port}" in log
    assert DEFAULT_SECRET not in log


async def test_wxgate_sandbox_serves_accounts_from_a_config_file(start, tmp_path: Path):
    config = tmp_path / "sandbox.toml"
    config.write_text(
        '[[accounts]]\nappid = "wxfromfile00000001"\nsecret = "file-secret"\n'
        'callback_mode = "safe"\n'
    )
    process, port = start([str(WXGATE), "sandbox", "--config", str(config), "--token-ttl", "600"])
    async with aiohttp.ClientSession() as session:
        wechat = WeChatCalls(session, f"http://127.0.0.1:{port}")
        answer = await wechat.stable(appid="wxfromfile00000001", secret="file-secret")
        assert answer["expires_in"] == 600
        assert "access_token" in await wechat.stable()  # the default account is still there
    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--callback-mode", "loud"], "plain or safe"),
        (["--config", "/nonexistent/sandbox.toml"], "cannot read"),
    ],
)
def test_bad_options_exit_with_a_message(args: list[str], complaint: str):
    result = subprocess.run(
        [sys.executable, "-m", "wxgate.sandbox", "--port", "0", *args],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert complaint in result.stderr.decode()
