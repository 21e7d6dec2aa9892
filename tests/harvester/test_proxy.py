"""Harvesting through a proxy with credentials, on both backends, against the test proxy and the emulator.

Chromium takes no credentials in a proxy URL and never proxies loopback by default; the emulator on 127.0.0.1
is reached *through* the proxy here, so each test also checks that loopback is proxied.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from cache import AuthCache
from harvester import Harvester, ProxyAuthError, harvest
from harvester._proxy import ProxySettings, is_proxy_refusal, parse_proxy
from harvester.cli import _exit
from tests.emulator._proxy import PASSWORD, ProxyThread

from .conftest import run_harvest

BACKENDS = ["nodriver", "playwright"]
WRONG = "wr0ng-pr0xy-pw"  # distinctive too, so a leak of the wrong password shows up as well

Factory = Callable[..., Any]


def error_text(exc: BaseException) -> str:
    """Everything a person or a log could see of an error: message, repr, and the formatted chain."""
    return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_harvest_through_an_authenticating_proxy(emulator: Any, auth_proxy: ProxyThread, backend: str) -> None:
    """The challenge clears through the proxy (not in the harvester's spare tab, which has none): it authenticated
    every request and the record keeps the URL."""
    async with Harvester(backend, spare_tabs=1) as harvester:
        await harvester.start()
        spare = harvester._browser._spares[0]
        record = await harvester.harvest("cerebras", base_url=emulator.url, proxy=auth_proxy.auth_url)
        assert harvester._browser._spares[0] is spare and (await spare).is_open()
    assert record.cookie_dict()["cf_clearance"]
    assert record.api_key and record.api_key.startswith("csk-")
    assert record.proxy == auth_proxy.auth_url
    assert PASSWORD not in repr(record)
    stats = auth_proxy.stats
    # The page, the challenge's answer and the session read all went through the proxy (loopback included).
    assert stats["paths"]["/cdn-cgi/challenge-platform/answer"] == 1
    assert stats["paths"]["/api/auth/session"] == 1
    assert stats["authenticated"] == stats["forwarded"] >= 4
    # Answered once; after that Chromium sends the credentials unasked, and never the wrong ones.
    assert stats["refused_without_credentials"] <= 1 and stats["refused_with_credentials"] == 0
    assert emulator.stats["clearances_issued"] == 1 and emulator.stats["session_requests"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_wrong_proxy_password_is_a_clear_error_in_time(
    emulator: Any, auth_proxy: ProxyThread, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong credentials end in ProxyAuthError long before the deadline, answered once, with no password shown."""
    caplog.set_level(logging.DEBUG, logger="harvester")
    cache = AuthCache.open()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProxyAuthError) as info:
        await harvest(
            "cloudflare",
            base_url=emulator.url,
            proxy=auth_proxy.url_for(auth_proxy.username or "", WRONG),
            backend=backend,
            timeout=30,
            cache=cache,
        )
    assert loop.time() - started < 15  # a refusal, not the 30 s deadline
    error = info.value
    assert error.provider == "cloudflare" and error.proxy == auth_proxy.url
    assert "refused the credentials" in str(error)
    for secret in (WRONG, PASSWORD):
        assert secret not in error_text(error) and secret not in caplog.text
    # The challenge was answered once per request, then cancelled: no loop of refusals.
    assert 1 <= auth_proxy.stats["refused_with_credentials"] <= 3
    assert auth_proxy.stats["authenticated"] == 0 and emulator.stats["challenge_pages"] == 0
    assert cache.get("cloudflare") is None
    # (no_leftovers checks that no Chromium process or profile of this test survives.)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_missing_credentials_say_how_to_give_them(emulator: Any, auth_proxy: ProxyThread, backend: str) -> None:
    """An authenticating proxy given without credentials is a ProxyAuthError that shows the URL form to use."""
    async with Harvester(backend, timeout=30) as harvester:
        with pytest.raises(ProxyAuthError, match="asks for credentials") as info:
            await harvester.harvest("cloudflare", base_url=emulator.url, proxy=auth_proxy.url)
    assert "USER:PASSWORD@" in str(info.value)
    assert auth_proxy.stats["refused_without_credentials"] >= 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_proxy_without_credentials_still_works(emulator: Any, proxy_factory: Factory, backend: str) -> None:
    """An open proxy (no credentials anywhere) carries the whole harvest, loopback included."""
    proxy = proxy_factory(username=None)
    async with Harvester(backend) as harvester:
        record = await harvester.harvest("cloudflare", base_url=emulator.url, proxy=proxy.url)
    assert record.cookie_dict()["cf_clearance"] and record.proxy == proxy.url
    assert proxy.stats["paths"]["/cdn-cgi/challenge-platform/answer"] == 1
    assert proxy.stats["refused"] == 0
    assert emulator.stats["clearances_issued"] == 1


def test_cli_never_prints_the_proxy_password(
    emulator: Any, auth_proxy: ProxyThread, harvest_env: dict[str, str]
) -> None:
    """`harvest --proxy` with credentials: neither a success nor a refusal shows the password, even with -v."""
    base = ["--provider", "cloudflare", "--base-url", emulator.url, "-v", "--timeout", "30"]
    good = run_harvest(harvest_env, *base, "--proxy", auth_proxy.auth_url)
    assert good.returncode == _exit.OK, good.stderr
    assert auth_proxy.stats["authenticated"] >= 1
    bad = run_harvest(harvest_env, *base, "--proxy", auth_proxy.url_for(auth_proxy.username or "", WRONG))
    assert bad.returncode == _exit.USAGE, bad.stderr
    assert "refused the credentials" in bad.stderr and "Traceback" not in bad.stderr
    for out in (good, bad):
        for secret in (PASSWORD, WRONG):
            assert secret not in out.stdout and secret not in out.stderr


async def test_socks_credentials_fail_before_a_browser_starts(no_leftovers: Any) -> None:
    """Chromium cannot authenticate to SOCKS: a ValueError at once (no password in it), and no browser ran."""
    async with Harvester() as harvester:
        with pytest.raises(ValueError, match="SOCKS") as info:
            await harvester.harvest("cloudflare", base_url="http://127.0.0.1:9", proxy=f"socks5://u:{PASSWORD}@h:1080")
        assert harvester.browser_launches == 0
    assert PASSWORD not in error_text(info.value)


def test_parse_proxy_splits_off_the_credentials() -> None:
    """The address keeps scheme, host and port; credentials are percent-decoded and out of the repr."""
    settings = parse_proxy("http://us%40er:p%3Ass%40w@proxy.example:3128")
    assert settings == ProxySettings("http://proxy.example:3128", "us@er", "p:ss@w")
    assert "p:ss@w" not in repr(settings)
    assert parse_proxy("http://proxy.example:3128") == ProxySettings("http://proxy.example:3128")
    assert parse_proxy("proxy.example:3128").server == "proxy.example:3128"
    assert parse_proxy("user@proxy.example:3128") == ProxySettings("proxy.example:3128", "user", "")
    assert parse_proxy("socks5://proxy.example:1080").server == "socks5://proxy.example:1080"


def test_proxy_refusal_errors() -> None:
    """Chromium's net errors for a 407 are recognised; other failures are not."""
    assert is_proxy_refusal("net::ERR_INVALID_AUTH_CREDENTIALS")
    assert is_proxy_refusal("Page.goto: net::ERR_PROXY_AUTH_UNSUPPORTED at http://x/")
    assert not is_proxy_refusal("net::ERR_CONNECTION_REFUSED") and not is_proxy_refusal(None)
