"""What the emulator's own tests share: a browser-like HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
HEADERS = {"User-Agent": UA, "sec-ch-ua": '"Chromium";v="156", "Not)A;Brand";v="99"'}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with the browser UA and a cookie jar that accepts cookies for 127.0.0.1."""
    async with aiohttp.ClientSession(
        headers=HEADERS, cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield session
