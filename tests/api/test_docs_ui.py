"""/docs and /redoc name only the gateway's own assets, and the gateway serves them.

What the pages then do in a browser (render, and ask nothing of another host) is
tests/browser/test_api_docs.py.
"""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Gateway
from wxgate.api.docs_ui import STATIC_DIR

ASSET_URL = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
# Any absolute URL in the page, including one inside its inline script.
ABSOLUTE_URL = re.compile(r"""["'(]((?:https?:)?//[^"')\s]+)""")


async def _page(gateway: Gateway, path: str) -> str:
    status, html, reply = await gateway.get(path, key=None)
    assert status == 200 and reply.content_type == "text/html"
    return str(html)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_page_names_no_other_host(gateway: Gateway, path: str) -> None:
    assert ABSOLUTE_URL.findall(await _page(gateway, path)) == []


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_every_asset_a_docs_page_names_is_served(gateway: Gateway, path: str) -> None:
    assets = ASSET_URL.findall(await _page(gateway, path))
    assert len(assets) >= 2  # a script, and a favicon (and Swagger UI's stylesheet)
    for url in assets:
        status, _, reply = await gateway.get(url, key=None)
        assert status == 200, url
        served = STATIC_DIR / url.removeprefix("/docs/assets/")
        assert reply.raw == served.read_bytes(), url


async def test_redoc_loads_no_google_fonts(gateway: Gateway) -> None:
    assert "fonts.googleapis.com" not in await _page(gateway, "/redoc")


async def test_swagger_ui_sends_the_spec_to_no_validator(gateway: Gateway) -> None:
    assert '"validatorUrl": null' in await _page(gateway, "/docs")


@pytest.mark.parametrize("licence", ["swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"])
def test_vendored_assets_carry_their_licences(licence: str) -> None:
    assert (STATIC_DIR / licence).stat().st_size > 0


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_page_lets_the_browser_fetch_from_this_host_only(
    gateway: Gateway, path: str
) -> None:
    _, _, reply = await gateway.get(path, key=None)
    policy = [part.strip() for part in reply.headers["Content-Security-Policy"].split(";")]
    assert "default-src 'self'" in policy
    assert "img-src 'self' data:" in policy
