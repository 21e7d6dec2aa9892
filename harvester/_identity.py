"""What the browser says it is: the user agent, the client hints and the matching curl_cffi target.

Pure functions of the browser's own version, so the headers the browser sends while harvesting and the
headers the curl_cffi clients send later are the same strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACCEPT_LANGUAGE = "en-US,en;q=0.9"
PLATFORM = "Linux"

# curl_cffi's Chrome desktop targets (its BrowserType enum, 0.16). Kept here as data so a harvest never
# imports curl_cffi; an older curl_cffi that lacks the chosen target fails loudly in the client instead.
CURL_CFFI_CHROME_TARGETS = (99, 100, 101, 104, 107, 110, 116, 119, 120, 123, 124, 131, 136, 142, 145, 146, 150)

# Chromium's GREASE brand (components/embedder_support/user_agent_utils.cc): the characters, versions and
# orders are seeded by the major version, so a real Chromium of one version always sends the same list.
_GREASE_CHARS = (" ", "(", ":", "-", ".", "/", ")", ";", "=", "?", "_")
_GREASE_VERSIONS = ("8", "99", "24")


@dataclass(frozen=True, slots=True)
class Identity:
    """The user agent and client hints one harvest presents, and records for the clients."""

    user_agent: str
    full_version: str
    brands: tuple[tuple[str, str], ...]  # (brand, major) in the browser's order
    full_version_list: tuple[tuple[str, str], ...]
    accept_language: str = ACCEPT_LANGUAGE
    platform: str = PLATFORM
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def major(self) -> int:
        """The browser's major version."""
        head = self.full_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def headers(self) -> dict[str, str]:
        """The client-hint and language headers a request from this browser carries (lower-case names)."""
        return {
            "accept-language": self.accept_language,
            "sec-ch-ua": ", ".join(f'"{brand}";v="{version}"' for brand, version in self.brands),
            "sec-ch-ua-mobile": "?0",
            "sec-ch-ua-platform": f'"{self.platform}"',
        }

    def cdp_override(self) -> dict[str, Any]:
        """Parameters for CDP ``Network.setUserAgentOverride`` that make the page agree with :meth:`headers`."""
        return {
            "userAgent": self.user_agent,
            "acceptLanguage": "en-US,en",
            "platform": "Linux x86_64",
            "userAgentMetadata": {
                "brands": [{"brand": b, "version": v} for b, v in self.brands],
                "fullVersionList": [{"brand": b, "version": v} for b, v in self.full_version_list],
                "fullVersion": self.full_version,
                "platform": self.platform,
                "platformVersion": "",
                "architecture": "x86",
                "model": "",
                "mobile": False,
                "bitness": "64",
                "wow64": False,
            },
        }


def build_identity(user_agent: str, product: str) -> Identity:
    """Build the identity from ``Browser.getVersion``'s ``userAgent`` and ``product`` (``Chrome/156.0.x``).

    The UA loses its ``Headless`` marker and any version past the major one; the brands are those this Chromium
    version sends by itself.
    """
    full_version = product.partition("/")[2] or "0.0.0.0"
    major = full_version.split(".", 1)[0]
    seed = int(major) if major.isdigit() else 0
    ua = re.sub(r"HeadlessChrome/", "Chrome/", user_agent).replace("Headless", "")
    # Chrome's user agent gives the major version only (UA reduction, since Chrome 110); a headless shell
    # still reports the full one, which no desktop Chrome sends.
    ua = re.sub(r"Chrome/(\d+)(?:\.\d+)+", r"Chrome/\1.0.0.0", ua)
    if not ua:
        ua = (
            f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        )
    grease = "Not" + _GREASE_CHARS[seed % 11] + "A" + _GREASE_CHARS[(seed + 1) % 11] + "Brand"
    grease_version = _GREASE_VERSIONS[seed % 3]
    # Chromium (not Google Chrome) sends two brands; with two, the order is picked by seed % 2.
    order = (0, 1) if seed % 2 == 0 else (1, 0)
    short = [(grease, grease_version), ("Chromium", major)]
    full = [(grease, f"{grease_version}.0.0.0"), ("Chromium", full_version)]
    brands = [("", "")] * 2
    full_list = [("", "")] * 2
    for index, position in enumerate(order):
        brands[position] = short[index]
        full_list[position] = full[index]
    return Identity(
        user_agent=ua,
        full_version=full_version,
        brands=tuple(brands),
        full_version_list=tuple(full_list),
    )


def impersonate_target(major: int) -> str:
    """The curl_cffi target closest to Chrome ``major``: the newest not above it, else the newest known."""
    eligible = [v for v in CURL_CFFI_CHROME_TARGETS if v <= major]
    return f"chrome{max(eligible) if eligible else max(CURL_CFFI_CHROME_TARGETS)}"
