"""The identity (UA, client hints, curl_cffi target) derives from the browser's own version."""

from __future__ import annotations

from harvester._identity import build_identity, impersonate_target

HEADLESS_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"
)


def test_user_agent_loses_headless() -> None:
    """The UA keeps the browser's version but says Chrome, not HeadlessChrome."""
    identity = build_identity(HEADLESS_UA, "Chrome/156.0.8078.79")
    assert "Headless" not in identity.user_agent
    assert "Chrome/156.0.0.0" in identity.user_agent
    assert identity.full_version == "156.0.8078.79"


def test_client_hints_match_chromium_156() -> None:
    """Chromium 156 sends exactly these client hints (measured from the real browser)."""
    headers = build_identity(HEADLESS_UA, "Chrome/156.0.8078.79").headers()
    assert headers == {
        "accept-language": "en-US,en;q=0.9",
        "sec-ch-ua": '"Not:A-Brand";v="8", "Chromium";v="156"',
        "sec-ch-ua-mobile": "?0",
        "sec-ch-ua-platform": '"Linux"',
    }


def test_cdp_override_carries_consistent_metadata() -> None:
    """The CDP override's brands and full versions agree with the sec-ch-ua header."""
    identity = build_identity(HEADLESS_UA, "Chrome/157.0.1.2")
    meta = identity.cdp_override()["userAgentMetadata"]
    assert [b["brand"] for b in meta["brands"]] == [b for b, _ in identity.brands]
    assert {"brand": "Chromium", "version": "157.0.1.2"} in meta["fullVersionList"]
    assert meta["platform"] == "Linux" and meta["mobile"] is False


def test_impersonate_picks_newest_target_not_above_the_browser() -> None:
    """The curl_cffi target is the newest Chrome not newer than the browser, else the newest known."""
    assert impersonate_target(156) == "chrome150"
    assert impersonate_target(136) == "chrome136"
    assert impersonate_target(135) == "chrome131"
    assert impersonate_target(50) == "chrome150"


def test_static_targets_exist_in_curl_cffi() -> None:
    """Every target in the static list is one the installed curl_cffi knows."""
    from curl_cffi.requests import BrowserType

    from harvester._identity import CURL_CFFI_CHROME_TARGETS

    known = {b.value for b in BrowserType}
    assert {f"chrome{v}" for v in CURL_CFFI_CHROME_TARGETS} <= known


def test_user_agent_gives_the_major_version_only_as_chrome_does() -> None:
    """A headless shell reports its full version in the UA; the identity sends the reduced one, as Chrome does."""
    shell_ua = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.8078.108 "
        "Safari/537.36"
    )
    identity = build_identity(shell_ua, "HeadlessChrome/156.0.8078.108")
    assert identity.user_agent == (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
    )
    assert identity.full_version == "156.0.8078.108"  # the client hints keep the full version, as Chrome's do
