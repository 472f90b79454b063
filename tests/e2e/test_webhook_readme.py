"""README.md's webhook receiver, run as shown: a real gateway posts to it, it verifies
each post with the standardwebhooks library and prints what it took."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.conftest import free_port
from tests.e2e.conftest import MakeStack
from tests.e2e.readme import README
from wxgate.delivery.webhook_signing import new_secret

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_receiver() -> str:
    """The first python block of the README's "Status webhooks" section."""
    section = README.read_text().split("## Status webhooks", 1)[1].split("\n## ", 1)[0]
    match = _PYTHON_BLOCK.search(section)
    assert match is not None, "no python block under ## Status webhooks"
    return match.group(1)


async def _listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("the README receiver did not listen")


async def test_the_readme_receiver_verifies_and_prints_each_status(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver())
    secret, port = new_secret(), free_port()
    env = {**os.environ, "WXGATE_WEBHOOK_SECRET": secret, "PORT": str(port)}
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        await _listening(port)
        url = f"http://127.0.0.1:{port}/wxgate"
        stack = await make_stack(
            app={"webhook_url": url, "webhook_secret": secret},
        )
        ok = await stack.send("oAlice_readme")
        bad = await stack.send("invalid_grace")
        await stack.settled([ok, bad])
        assert receiver.stdout is not None
        lines = set()
        for _ in range(3):
            line = await asyncio.wait_for(receiver.stdout.readline(), 15)
            lines.add(line.decode().strip())
        assert lines == {f"{ok} sent None", f"{ok} delivered None", f"{bad} failed 40003"}
    finally:
        receiver.terminate()
        await receiver.wait()
