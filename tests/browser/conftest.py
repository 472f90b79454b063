"""The browser-test rig: Debian's Chromium, headless, driven by Playwright, that may
only talk to this host; and a real gateway for it to look at.

`local_page` is a fresh Chromium profile and page. Every request the page makes
(documents, scripts, styles, images, fetches, workers, WebSockets) is recorded; one
for a host other than 127.0.0.1, localhost or [::1] that the browser goes on to send
is aborted before it leaves and fails the test (one the page's own
Content-Security-Policy refused never leaves, and is listed apart).

`gateway_url` is a gateway (role all, SQLite, the sandbox as WeChat) served on a free
loopback port. Chromium missing (not installed, and `.ci/run` could
not install it) skips the test with that reason.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Request, Route, async_playwright

from tests.conftest import free_port
from tests.e2e.conftest import e2e_settings
from wxgate.gateway import Gateway
from wxgate.sandbox.server import SandboxServer
from wxgate.server import serve_in_background

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
# Root needs --no-sandbox; the rest keep Chromium from calling home (update checks,
# sync, field trials), which this machine's closed network refuses noisily.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HOSTLESS_SCHEMES = frozenset({"data", "blob", "about"})
NAVIGATION_TIMEOUT_MS = 30_000
CSP_FAILURE = "csp"  # Playwright's failure text for a request the page's policy refused


def is_local(url: str) -> bool:
    """True for a URL that stays on this host (loopback, or no host at all: data:, blob:)."""
    parts = urlsplit(url)
    if parts.scheme in HOSTLESS_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOCAL_HOSTS


def chromium_executable() -> str:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (`apt-get install chromium`; .ci/run installs it)")


@dataclass
class LocalPage:
    """A Chromium page and what it asked for: every URL, those its Content-Security-Policy
    refused, and those that would have left the host (aborted)."""

    page: Page
    shots: Path
    requests: list[str] = field(default_factory=list)
    refused_by_policy: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    async def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """A PNG of the page under the test's tmp dir (the file tool can show it)."""
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path


async def _guard(context: BrowserContext, local: LocalPage) -> None:
    # The request event sees every request, those a CSP refuses included; only those the
    # browser goes on to send reach the route, where an outside one is aborted.
    async def route(route: Route, request: Request) -> None:
        if is_local(request.url):
            await route.continue_()
        else:
            local.outside.append(request.url)
            await route.abort("blockedbyclient")

    def failed(request: Request) -> None:
        if request.failure == CSP_FAILURE:
            local.refused_by_policy.append(request.url)

    context.on("request", lambda request: local.requests.append(request.url))
    context.on("requestfailed", failed)
    await context.route("**/*", route)


def _record_socket(local: LocalPage, url: str) -> None:
    local.requests.append(url)
    if not is_local(url):
        local.outside.append(url)  # routing does not hold WebSockets: fail on the attempt


@pytest.fixture
async def local_page(tmp_path: Path) -> AsyncIterator[LocalPage]:
    executable = chromium_executable()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(NAVIGATION_TIMEOUT_MS)
            local = LocalPage(page=page, shots=tmp_path)
            await _guard(context, local)
            page.on("websocket", lambda socket: _record_socket(local, socket.url))
            yield local
        finally:
            await context.close()
    if local.outside:
        pytest.fail(f"the page made requests that leave the host: {local.outside}")


@pytest.fixture
async def gateway_url(tmp_path: Path) -> AsyncIterator[str]:
    """A gateway (role all) on SQLite with the sandbox as WeChat; its base URL."""
    sandbox = SandboxServer(host="127.0.0.1", port=0)
    await sandbox.start()
    port = free_port()
    settings = e2e_settings(
        port=port, db_path=tmp_path / "browser.db", api_base=sandbox.base_url, safe=False
    )
    gateway = Gateway(settings)
    try:
        await gateway.start()
        assert gateway.app is not None
        server = await serve_in_background(gateway.app, "127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await server.stop()
    finally:
        await gateway.stop()
        await sandbox.stop()
