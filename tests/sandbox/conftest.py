"""Fixtures for the sandbox tests: an HTTP client that speaks WeChat to the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.sandbox.helpers import WeChatCalls


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def wechat(sandbox: Any, http: aiohttp.ClientSession) -> WeChatCalls:
    return WeChatCalls(http, sandbox.base_url)
