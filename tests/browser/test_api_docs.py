"""The API docs render in a real browser with nothing fetched from another host.

A CDN or Google Fonts request would be aborted by the rig and fail the test, and the
page would then stay blank, as it does on an intranet or in mainland China.
"""

from __future__ import annotations

import aiohttp

from tests.browser.conftest import LocalPage

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "options", "head"})


async def _operation_count(gateway_url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway_url}/openapi.json") as r:
        spec = await r.json()
    return sum(1 for item in spec["paths"].values() for method in item if method in HTTP_METHODS)


async def test_swagger_ui_lists_every_operation_from_local_assets(
    local_page: LocalPage, gateway_url: str
) -> None:
    page = local_page.page
    await page.goto(f"{gateway_url}/docs")
    await page.locator(".opblock").first.wait_for()
    paths = await page.locator(".opblock-summary-path").all_inner_texts()
    await local_page.screenshot("swagger-ui")

    assert len(paths) == await _operation_count(gateway_url)
    assert any(path.replace("\u200b", "") == "/v1/messages" for path in paths)
    assert f"{gateway_url}/docs/assets/swagger-ui/swagger-ui-bundle.js" in local_page.requests
    assert local_page.outside == []


async def test_redoc_shows_the_api_title_from_local_assets(
    local_page: LocalPage, gateway_url: str
) -> None:
    page = local_page.page
    await page.goto(f"{gateway_url}/redoc")
    title = page.locator("h1", has_text="wxgate")
    await title.wait_for()
    await page.get_by_text("/v1/messages").first.wait_for()
    await local_page.screenshot("redoc")

    assert (await title.inner_text()).startswith("wxgate")
    assert f"{gateway_url}/docs/assets/redoc/redoc.standalone.js" in local_page.requests
    assert local_page.outside == []
    # ReDoc's sidebar asks for its maker's logo; the page's policy keeps it home.
    assert local_page.refused_by_policy == ["https://cdn.redoc.ly/redoc/logo-mini.svg"]
