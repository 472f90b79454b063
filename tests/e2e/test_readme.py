"""Every example of README.md runs as shown, so the README cannot drift from the gateway.

The `sh` blocks of "Running it" and "HTTP API" (every block that runs `curl` or
`wxgate`; "Two commands" runs `make`, and `make test` is what runs this) run in
order, in one directory, as real processes: `wxgate config init --sandbox`, `config
check`, the sandbox and `serve` started in the background (as the README's four
terminals), then each `wxgate` and `curl` command, its output compared with the `# →`
line under it (tests/e2e/readme.py says how). The README's fixed ports are moved to
free ones the documented way: `WXGATE_SERVER__PORT` and
`WXGATE_APPS__DEFAULT__API_BASE` in the environment, `--port` for the sandbox, and
`127.0.0.1:8000` in a command read as the gateway's address. `curl` is the real one
when the machine has it; otherwise each curl line is replayed with the same method,
headers and body (and a test shows the two agree).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.readme import (
    CurlRequest,
    Step,
    compare,
    curl_request,
    replay,
    sh_blocks,
    substitute,
)

WXGATE = str(Path(sys.executable).with_name("wxgate"))
CURL = shutil.which("curl")
README_GATEWAY = "127.0.0.1:8000"
START_DEADLINE_S = 60.0
READ_DEADLINE_S = 30.0  # a read is asked again until it shows the README's answer
# Commands that only read, asked again until their answer is the README's (a message
# is delivered a moment after it is sent).
WXGATE_READS = ("messages show", "messages list", "dlq list", "apps list", "config check")


def _is_read(command: str) -> bool:
    if command.startswith("curl "):
        return " -X " not in command and " -d " not in command
    return any(f"wxgate {read}" in command for read in WXGATE_READS)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 -- loopback http
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Session:
    """One directory, the README's variables and placeholders so far, and the
    processes its examples started."""

    workdir: Path
    gateway_port: int
    sandbox_port: int
    variables: dict[str, str] = field(default_factory=dict)
    bindings: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def environment(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}
        return clean | {
            "COLUMNS": "200",
            "WXGATE_SERVER__PORT": str(self.gateway_port),
            "WXGATE_APPS__DEFAULT__API_BASE": f"http://127.0.0.1:{self.sandbox_port}",
            **self.variables,
        }

    def localised(self, text: str) -> str:
        """`text` with this session's placeholders, gateway address and wxgate."""
        text = substitute(text, self.bindings)
        text = text.replace(README_GATEWAY, f"127.0.0.1:{self.gateway_port}")
        return text.replace(".venv/bin/wxgate", WXGATE)

    def take(self, step: Step) -> None:
        """Run one step of the README: a variable, a process or a command."""
        where = f"README.md:{step.line}"
        if step.assignment is not None:
            name, value = step.assignment
            self.variables[name] = self.localised(value)
            return
        command = self.localised(step.command)
        if f"{WXGATE} sandbox" in command or f"{WXGATE} serve" in command:
            self._start(command, where)
            return
        assert step.answer is not None, f"{where}: no `# →` answer under {step.command!r}"
        self._check(command, step.answer, where)

    def _check(self, command: str, answer: str, where: str) -> None:
        deadline = time.monotonic() + (READ_DEADLINE_S if _is_read(command) else 0)
        while True:
            printed = self._output(command, where)
            comparison = compare(answer, printed, self.bindings)
            if not comparison.problems:
                self.bindings = comparison.bindings
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{where}: {command}\n  " + "\n  ".join(comparison.problems))
            time.sleep(0.3)

    def _output(self, command: str, where: str) -> str:
        if command.startswith("curl ") and CURL is None:
            return replay(curl_request(command, self.variables))
        done = subprocess.run(
            ["bash", "-c", command], cwd=self.workdir, env=self.environment,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{where}: exit {done.returncode}: {done.stderr[-2000:]}"
        return done.stdout

    def _start(self, command: str, where: str) -> None:
        if " sandbox" in command:
            command += f" --port {self.sandbox_port}"
            ready = f"http://127.0.0.1:{self.sandbox_port}/sandbox/stats"
        else:
            ready = f"http://127.0.0.1:{self.gateway_port}/readyz"
        log_path = self.workdir / f"process-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=self.workdir, env=self.environment,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(process)
        deadline = time.monotonic() + START_DEADLINE_S
        while not _answers_200(ready):
            log_tail = log_path.read_text(errors="replace")[-2000:]
            assert process.poll() is None, f"{where}: {command} exited:\n{log_tail}"
            assert time.monotonic() < deadline, f"{where}: {command} not ready:\n{log_tail}"
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    running = Session(tmp_path, gateway_port=free_port(), sandbox_port=free_port())
    yield running
    running.stop()


def test_every_readme_example_answers_as_shown(session: Session) -> None:
    blocks = sh_blocks()
    steps = [step for block in blocks for step in block]

    for step in steps:
        session.take(step)

    answered = [step for step in steps if step.answer is not None]
    assert len(blocks) >= 2 and len(answered) >= 15  # the scan found the examples
    assert {"01KA...", "01KB...", "9f86...", "wxg_..."} <= session.bindings.keys()


# -- the comparison itself ---------------------------------------------------------------------


def test_an_envelope_with_another_msg_is_a_difference() -> None:
    shown = '{"code":0,"msg":"accepted","data":{"id":"01KB...","status":"queued"}}'
    printed = '{"code":0,"msg":"ok","data":{"id":"01M97G49V7BA52X4ASSF8HK3GB","status":"queued"}}'

    assert compare(shown, printed, {}).problems == ["$.msg: 'ok', shown as 'accepted'"]


def test_a_placeholder_holds_the_value_it_was_first_shown_with() -> None:
    shown = '{"id":"01KB...","status":"queued"}'
    first = compare(shown, '{"id":"01M97G49V7BA52X4ASSF8HK3GB","status":"queued"}', {})
    again = compare(shown, '{"id":"01M97G4QPYHVCCYRPVT8RM0DWR","status":"queued"}', first.bindings)

    assert first.problems == [] and first.bindings == {"01KB...": "01M97G49V7BA52X4ASSF8HK3GB"}
    assert again.problems == [
        "$.id: '01M97G4QPYHVCCYRPVT8RM0DWR', but 01KB... was '01M97G49V7BA52X4ASSF8HK3GB'"
    ]


def test_ids_and_times_are_compared_by_shape() -> None:
    shown = '{"id":"01KB...","at":"2026-...","batch_id":"9f86...",...}'

    good = compare(
        shown, '{"id":"01M97G49V7BA52X4ASSF8HK3GB","at":"2026-12-07T05:37:50.977Z",'
        '"batch_id":"4af58eaa934d6574a87e8ca65395b3fe","more":1}', {},
    )  # fmt: skip
    bad = compare(shown, '{"id":"42","at":"yesterday","batch_id":"4af5"}', {})

    assert good.problems == []
    assert [problem.partition(":")[0] for problem in bad.problems] == ["$.id", "$.at", "$.batch_id"]


# -- curl without curl -----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[Received]]]:
    """An HTTP server on loopback that answers `{}` and keeps what it received."""
    received: list[Received] = []

    class Keep(BaseHTTPRequestHandler):
        def _keep(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            headers = {name.lower(): value for name, value in self.headers.items()}
            received.append(Received(self.command, self.path, headers, self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = do_DELETE = _keep

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


COMPARED_HEADERS = ("authorization", "content-type", "idempotency-key")


@pytest.mark.skipif(CURL is None, reason="no curl on this machine to compare the replay with")
def test_a_replayed_curl_line_sends_what_curl_sends(
    recorder: tuple[str, list[Received]], tmp_path: Path
) -> None:
    url, received = recorder
    variables = {"GW": url, "KEY": "wxg_replay-test-key"}
    curls = [s.command for block in sh_blocks() for s in block if s.command.startswith("curl ")]

    for command in curls:
        subprocess.run(["bash", "-c", command], env=os.environ | variables, check=True)
        replay(curl_request(command, variables))

    assert len(received) == 2 * len(curls) >= 10
    for by_curl, by_replay in zip(received[::2], received[1::2], strict=True):
        assert (by_replay.method, by_replay.path, by_replay.body) == (
            by_curl.method, by_curl.path, by_curl.body
        )  # fmt: skip
        for name in COMPARED_HEADERS:
            assert by_replay.headers.get(name) == by_curl.headers.get(name), by_curl.path


def test_a_curl_line_with_an_option_the_replay_does_not_know_is_refused() -> None:
    with pytest.raises(AssertionError, match="--insecure"):
        curl_request("curl --insecure http://127.0.0.1:1/x", {})
    assert curl_request("curl -s $GW/x", {"GW": "http://127.0.0.1:1"}) == CurlRequest(
        "GET", "http://127.0.0.1:1/x", (), None
    )
