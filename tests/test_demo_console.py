"""`wxgate demo --keep` (`make demo DEMO_ARGS=--keep`): the demo prints the web console's
URL and a key that signs in to it, stays up until Ctrl-C, then stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from wxgate.api.console.session import SESSION_COOKIE, SIGN_IN_COOKIE
from wxgate.demo import SAMPLES

CONSOLE_URL = re.compile(r"web console: (http://127\.0\.0\.1:\d+/ui)$")
API_KEY_LINE = re.compile(r"API key to sign in with: (\S+)$")
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


async def _read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError("the demo ended early:\n" + "".join(seen))
        seen.append(line.decode())
        if marker in seen[-1]:
            return


async def _sign_in(url: str, key: str) -> str:
    """The overview page, reached with a session opened by `key`."""
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keep cookies for an IP host
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{url}/login") as resp:
            found = CSRF_FIELD.search(await resp.text())
            assert found is not None
        form = {"csrf": found.group(1), "api_key": key}
        async with http.post(f"{url}/login", data=form) as resp:
            assert resp.status == 200 and str(resp.url) == url, await resp.text()
            names = {cookie.key for cookie in jar}
            assert SESSION_COOKIE in names and SIGN_IN_COOKIE not in names
            return await resp.text()


# Started as a shell's background job or by some supervisors, a process inherits SIGINT
# ignored; Python then installs no KeyboardInterrupt, and Ctrl-C must still stop the demo.
SIGINT_IGNORED = ["/bin/sh", "-c", 'trap "" INT; exec "$0" "$@"']


@pytest.mark.parametrize("sigint", ["default", "inherited ignored"])
async def test_demo_keep_serves_the_console_until_ctrl_c(tmp_path: Path, sigint: str) -> None:
    wxgate = str(Path(sys.executable).with_name("wxgate"))
    env = {**os.environ, "COLUMNS": "200"}
    prefix = SIGINT_IGNORED if sigint == "inherited ignored" else []
    process = await asyncio.create_subprocess_exec(
        *prefix,
        wxgate,
        "demo",
        "--keep",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        await asyncio.wait_for(_read_until(process.stdout, "Ctrl-C stops", seen), 60)
        [url] = [m.group(1) for m in map(CONSOLE_URL.search, seen) if m]
        [key] = [m.group(1) for m in map(API_KEY_LINE.search, seen) if m]

        overview = await _sign_in(url, key)
        assert "Overview" in overview
        accepted = re.search(r"accepted <strong>(\d+)</strong>", overview)
        assert accepted is not None and int(accepted.group(1)) >= len(SAMPLES)

        process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, "".join(seen) + rest.decode()
    assert "demo stopped" in rest.decode()
