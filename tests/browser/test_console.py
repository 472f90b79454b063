"""The web console in a real Chromium: an operator signs in, finds a message and its
timeline, resumes a paused app, replays a dead letter, and signs out; a form without
the session's CSRF token, or a request without a session, is refused; the pages fit a
390 px phone and refresh themselves. Nothing is fetched from another host (the rig
fails the test), and no page shows the access token.

Every page's screenshot is saved under the test's tmp dir. With
CONSOLE_SCREENSHOTS=<dir> (docs/console to refresh the committed ones) they are also
copied there: `CONSOLE_SCREENSHOTS=docs/console pytest tests/browser/test_console.py`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import LocalPage
from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, APP, e2e_settings, eventually
from wxgate.backends.sqlite import SqliteBackend
from wxgate.gateway import Gateway
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer
from wxgate.server import serve_in_background

SHOTS_ENV = "CONSOLE_SCREENSHOTS"
PHONE = {"width": 390, "height": 844}
CONFIG_ERRCODE = "48001"  # "api unauthorized": CONFIG, so the message dies and the app pauses
DATA = {
    "character_string1": {"value": "SO20261207001"},
    "thing2": {"value": "Left Hangzhou depot"},
    "time3": {"value": "2026-12-07 10:30"},
}
SETTLED = {"delivered", "rejected", "failed", "dead"}
# Playwright's assertions wait 5 s by default; the full suite shares two cores.
expect.set_options(timeout=15_000)


@dataclass
class Console:
    """A gateway with the sandbox as WeChat, seeded with messages in every state."""

    url: str
    db_path: Path
    control: SandboxControl
    http: aiohttp.ClientSession
    ids: dict[str, str] = field(default_factory=dict)  # touser -> message id
    batch_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def send(self, touser: str) -> str:
        body = {"touser": touser, "template_id": "tmpl_order_shipped", "data": DATA}
        async with self.http.post(
            f"{self.url}/v1/messages", json=body, headers=self.headers
        ) as resp:
            assert resp.status == 202, await resp.text()
            message_id = str((await resp.json())["data"]["id"])
        self.ids[touser] = message_id
        return message_id

    async def record(self, message_id: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.url}/v1/messages/{message_id}", headers=self.headers
        ) as resp:
            data: dict[str, Any] = (await resp.json())["data"]
            return data

    async def settled(self, *ids: str) -> None:
        async def all_settled() -> bool:
            statuses = [(await self.record(i))["status"] for i in ids]
            return all(status in SETTLED for status in statuses)

        await eventually(all_settled, 20.0, "messages settled")

    async def paused(self) -> bool:
        async with self.http.get(f"{self.url}/v1/apps", headers=self.headers) as resp:
            apps = (await resp.json())["data"]["items"]
        return any(app["app"] == APP and app["pause"] is not None for app in apps)

    async def access_token(self) -> str:
        """The stored access token, read from the gateway's SQLite file as a second process."""
        backend = SqliteBackend(self.db_path)
        await backend.start()
        try:
            cached = await backend.token_store().load(APP)
        finally:
            await backend.close()
        assert cached is not None
        return cached.token

    async def seed(self) -> None:
        """Delivered, rejected and failed messages, a batch, and a dead letter whose
        CONFIG errcode paused the app."""
        first = [
            await self.send(touser)
            for touser in ("oAlice_console", "oBob_console", "blocked_erin", "invalid_grace")
        ]
        body = {
            "template_id": "tmpl_order_shipped",
            "recipients": [{"touser": f"oBatch_{n}_console"} for n in range(4)],
            "data": DATA,
        }
        async with self.http.post(
            f"{self.url}/v1/messages/batch", json=body, headers=self.headers
        ) as resp:
            assert resp.status == 202, await resp.text()
            answer = (await resp.json())["data"]
        self.batch_id = answer["batch_id"]
        await self.settled(*first, *answer["ids"])
        await self.control.set_faults(errcode_rates={CONFIG_ERRCODE: 1.0})
        dead = await self.send("oDora_console")
        await self.settled(dead)
        await self.control.set_faults(errcode_rates={})
        assert (await self.record(dead))["status"] == "dead"
        assert await self.paused()


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    port = free_port()
    sandbox = SandboxServer(port=0, callback_url=f"http://127.0.0.1:{port}/wechat/callback/{APP}")
    await sandbox.start()
    db_path = tmp_path / "console.db"
    settings = e2e_settings(port=port, db_path=db_path, api_base=sandbox.base_url, safe=False)
    gateway = Gateway(settings)
    try:
        await gateway.start()
        assert gateway.app is not None
        server = await serve_in_background(gateway.app, "127.0.0.1", port)
        try:
            async with aiohttp.ClientSession() as http, SandboxControl(sandbox.base_url) as ctl:
                stack = Console(f"http://127.0.0.1:{port}", db_path, ctl, http)
                await stack.seed()
                yield stack
        finally:
            await server.stop()
    finally:
        await gateway.stop()
        await sandbox.stop()


async def shoot(local: LocalPage, name: str) -> Path:
    """A full-page screenshot under the test's tmp dir, copied to $CONSOLE_SCREENSHOTS."""
    path = await local.screenshot(name, full_page=True)
    target = os.environ.get(SHOTS_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)
    return path


async def sign_in(page: Page, url: str, key: str = API_KEY) -> None:
    await page.goto(f"{url}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def test_an_operator_finds_a_message_resumes_an_app_and_replays_a_dead_letter(
    local_page: LocalPage, console: Console
) -> None:
    page = local_page.page
    token = await console.access_token()
    seen: list[str] = []

    await page.goto(f"{console.url}/ui")
    assert page.url == f"{console.url}/ui/login"
    await shoot(local_page, "sign-in")
    await page.get_by_label("API key").fill("not-the-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That key is not accepted.")

    await sign_in(page, console.url)
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "wxgate_console"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
    assert API_KEY not in cookie["value"]
    shop = page.locator(f'tr[data-app="{APP}"]')
    await expect(shop).to_contain_text("paused: CONFIG")
    await expect(page.locator("#queue-depth")).to_have_text("0")
    await shoot(local_page, "overview")
    seen.append(await page.content())

    await shop.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status")).to_have_text(f"App {APP} resumed.")
    await expect(shop).to_contain_text("running")
    assert not await console.paused()

    await page.get_by_role("link", name="Messages").click()
    await expect(page.locator("table.messages tbody tr")).to_have_count(9)
    await shoot(local_page, "messages")
    seen.append(await page.content())
    await page.get_by_label("To user").fill("oAlice_console")
    await page.get_by_role("button", name="Filter").click()
    alice = console.ids["oAlice_console"]
    await expect(page.locator("table.messages tbody tr")).to_have_count(1)
    await page.get_by_role("link", name=alice).click()
    await expect(page.get_by_role("heading", name=f"Message {alice}")).to_be_visible()
    kinds = await page.locator(".timeline .event .badge").all_inner_texts()
    assert kinds == ["accepted", "sent", "report"]
    await shoot(local_page, "message")
    seen.append(await page.content())

    await page.get_by_role("link", name="Dead letters").click()
    dora = console.ids["oDora_console"]
    row = page.locator("table.messages tbody tr", has_text=dora)
    await expect(row).to_contain_text(CONFIG_ERRCODE)
    await shoot(local_page, "dead-letters")
    seen.append(await page.content())
    await row.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_have_text("1 message(s) queued again.")
    await console.settled(dora)
    assert (await console.record(dora))["status"] == "delivered"

    await page.get_by_role("link", name="Batches").click()
    progress = page.locator("section.batch progress")
    await expect(progress).to_have_attribute("max", "4")
    await expect(progress).to_have_attribute("value", "4")
    await expect(page.locator("section.batch h2")).to_have_text(console.batch_id)
    await shoot(local_page, "batches")
    seen.append(await page.content())

    await page.get_by_role("link", name="Tokens").click()
    await expect(page.locator("table.tokens tbody td.mono")).to_have_text(
        f"{token[:4]}…({len(token)} chars)"
    )
    await shoot(local_page, "tokens")
    seen.append(await page.content())

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_have_text("Signed out.")
    await page.goto(f"{console.url}/ui/messages")
    assert page.url == f"{console.url}/ui/login"

    assert all(token not in html and API_KEY not in html for html in seen)
    assert all(url.startswith(console.url) for url in local_page.requests)


async def test_a_form_with_a_bad_csrf_token_is_refused(
    local_page: LocalPage, console: Console
) -> None:
    page = local_page.page
    await sign_in(page, console.url)
    shop = page.locator(f'tr[data-app="{APP}"]')
    await shop.locator('input[name="csrf"]').evaluate("field => { field.value = 'forged' }")

    async with page.expect_response(lambda r: r.url.endswith("/resume")) as answer:
        await shop.get_by_role("button", name="Resume").click()

    assert (await answer.value).status == 403
    await expect(page.get_by_role("alert")).to_contain_text("CSRF")
    await shoot(local_page, "refused-csrf")
    assert await console.paused()


async def test_requests_without_a_session_are_refused(
    local_page: LocalPage, console: Console
) -> None:
    page = local_page.page
    await sign_in(page, console.url)
    csrf = await page.locator('tr[data-app] input[name="csrf"]').first.input_value()
    await page.context.clear_cookies()

    answer = await page.request.post(
        f"{console.url}/ui/apps/{APP}/resume", form={"csrf": csrf}, max_redirects=0
    )
    assert answer.status == 403
    await page.goto(f"{console.url}/ui/dead-letters")
    assert page.url == f"{console.url}/ui/login"
    assert await console.paused()
    dora = await console.record(console.ids["oDora_console"])
    assert dora["status"] == "dead"


async def test_pages_fit_a_phone_and_the_overview_refreshes_itself(
    local_page: LocalPage, console: Console
) -> None:
    page = local_page.page
    await page.set_viewport_size(PHONE)
    await sign_in(page, console.url)
    pages = {
        "overview": "/ui",
        "messages": "/ui/messages",
        "message": f"/ui/messages/{console.ids['blocked_erin']}",
        "dead-letters": "/ui/dead-letters",
        "batches": "/ui/batches",
        "tokens": "/ui/tokens",
    }
    for name, path in pages.items():
        await page.goto(console.url + path)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} is {width} px wide on a {PHONE['width']} px phone"
        await shoot(local_page, f"{name}-phone")

    await page.goto(f"{console.url}/ui")
    accepted = page.locator(".series-accepted figcaption strong")
    before = int(await accepted.inner_text())
    await asyncio.gather(*(console.send(f"oLate_{n}_console") for n in range(3)))
    await expect(page.locator("main[data-refreshed]")).to_have_count(1, timeout=15_000)
    await expect(accepted).to_have_text(str(before + 3))
