"""Recipes: where to go for each provider, what proves success, what to collect, and how long it lasts.

Data plus two small pure hooks (parse the session, build the extra headers). The I/O that runs a recipe
lives in ``_harvest.py``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from cache import _origin, normalize_name

from ._exceptions import InvalidURLError, UnknownProviderError

PROOF_COOKIE = "cf_clearance"


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to harvest one provider.

    Attributes:
        name: the record name in the cache.
        origin: the default origin (scheme://host[:port]); endpoints are paths under it.
        start_path: the page that carries the challenge and sets the cookies.
        ttl: how long a harvest is trusted when the proof cookie does not say otherwise.
        proof_cookie: the cookie whose expiry bounds the record's (``cf_clearance``).
        session_path: a JSON endpoint fetched *inside the page* for the API key, if any.
        headers: extra headers the site's own calls send; ``{origin}`` is replaced by the origin.
    """

    name: str
    origin: str
    start_path: str = "/"
    ttl: timedelta = timedelta(hours=1)
    proof_cookie: str | None = PROOF_COOKIE
    session_path: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def start_url(self) -> str:
        """The absolute URL the browser opens first."""
        return self.origin + self.start_path

    @property
    def session_url(self) -> str | None:
        """The absolute URL of the session endpoint, if the recipe has one."""
        return self.origin + self.session_path if self.session_path else None

    def rebase(self, origin: str) -> Recipe:
        """The same recipe on another origin; every endpoint keeps its path."""
        return dataclasses.replace(self, origin=normalize_origin(origin))

    def extra_headers(self) -> dict[str, str]:
        """The recipe's extra headers with ``{origin}`` filled in (lower-case names)."""
        return {k.lower(): v.replace("{origin}", self.origin) for k, v in self.headers.items()}


RECIPES: dict[str, Recipe] = {
    "cloudflare": Recipe(
        name="cloudflare",
        origin="https://playground.ai.cloudflare.com",
        # The playground clearance is short-lived in practice; refresh well inside it.
        ttl=timedelta(minutes=30),
    ),
    "cerebras": Recipe(
        name="cerebras",
        origin="https://inference.cerebras.ai",
        session_path="/api/auth/session",
    ),
    "deepinfra": Recipe(
        name="deepinfra",
        origin="https://deepinfra.com",
        headers={"X-Deepinfra-Source": "web-embed", "Origin": "{origin}", "Referer": "{origin}/"},
    ),
    "freenetfly": Recipe(
        name="freenetfly",
        origin="https://free.netfly.top",
    ),
}


def known_providers() -> list[str]:
    """The provider names that have a recipe, sorted."""
    return sorted(RECIPES)


# "javascript:alert(1)", "data:text/html,..." have a scheme but no "//"; "localhost:8080" is a host and a port.
_OTHER_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?!\d)")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def check_url(value: str, *, what: str = "--url") -> SplitResult:
    """Parse a URL a harvest may open: http(s), a host, a valid port, no credentials (pure).

    A bare ``host[:port][/path]`` gets ``https://``.

    Raises:
        InvalidURLError: "``what`` must be an http(s) URL" (the password, if any, shown as ``***``).
    """
    text = value.strip()
    bad = InvalidURLError(f"{what} must be an http(s) URL (got {mask_password(text)!r})", url=mask_password(text))
    if not text or _BAD_CHARS.search(text):
        raise bad
    if "://" not in text:
        if _OTHER_SCHEME.match(text):
            raise bad
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise bad
    try:
        port = parts.port
    except ValueError:
        raise bad from None
    if port == 0:
        raise bad
    if parts.username is not None or parts.password is not None:
        raise InvalidURLError(
            f"{what} must not carry credentials ({mask_password(text)}): harvest cannot sign in with them; "
            "run once with --headful and sign in in the browser window",
            url=mask_password(text),
        )
    return parts


def mask_password(url: str) -> str:
    """``http://user:secret@host/`` -> ``http://user:***@host/`` (pure; anything else unchanged)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}{slash}{tail}"


def normalize_origin(value: str, *, what: str = "base URL") -> str:
    """``http://host:port/any/path`` -> ``http://host:port`` (a bare ``host:port`` gets ``https://``).

    Raises:
        InvalidURLError (a ValueError): not an http(s) origin.
    """
    check_url(value, what=what)  # the harvester's stricter rules (port, credentials), with its typed error
    return _origin.normalize_origin(value)


def browser_origin(origin: str) -> str:
    """An origin as a browser's ``location.origin`` spells it: lower-case, without the scheme's default port.

    ``HTTPS://Example.com:443`` -> ``https://example.com``; ``http://127.0.0.1:8080`` is unchanged.
    """
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def env_base_url(provider: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``$HARVEST_<PROVIDER>_BASE_URL`` for ``provider`` (``-`` and ``.`` become ``_``), if set."""
    env = os.environ if environ is None else environ
    return env.get(_origin.base_url_variable(provider)) or None


def resolve_recipe(
    provider: str | None,
    *,
    url: str | None = None,
    name: str | None = None,
    base_url: str | None = None,
    config_base_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Recipe:
    """Pick and rebase the recipe for one harvest.

    ``url`` makes a generic recipe (any site: cookies and UA) named ``name`` or the URL's host.
    The origin comes from ``base_url`` (CLI), then ``$HARVEST_<PROVIDER>_BASE_URL``, then the config's
    ``base_url``, then the recipe's default.

    Raises:
        UnknownProviderError: ``provider`` has no recipe.
        InvalidURLError (a ValueError): an origin or URL that is not http(s), or carries credentials.
    """
    if url is not None:
        parts = check_url(url, what="--url")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        recipe = Recipe(
            name=name or provider or (parts.hostname or parts.netloc),
            origin=urlunsplit((parts.scheme, parts.netloc, "", "", "")),
            start_path=path,
            proof_cookie=PROOF_COOKIE,
        )
    else:
        if not provider or provider not in RECIPES:
            raise UnknownProviderError(provider or "", known_providers())
        recipe = RECIPES[provider]
        if name:
            recipe = dataclasses.replace(recipe, name=name)
    checked = normalize_name(recipe.name)  # ValueError naming the rule: --name and hosts become cache keys
    if checked != recipe.name:
        recipe = dataclasses.replace(recipe, name=checked)
    if base_url:
        return recipe.rebase(normalize_origin(base_url, what="--base-url"))
    origin = env_base_url(recipe.name, environ) or config_base_url
    return recipe.rebase(origin) if origin else recipe


def parse_session(payload: Any) -> str | None:
    """The ``demoApiKey`` from a NextAuth-style session (``{"user": {"demoApiKey": ...}}``), or None.

    An empty session (``{}``, ``null``) means nobody is signed in.
    """
    if not isinstance(payload, dict):
        return None
    user = payload.get("user")
    if not isinstance(user, dict):
        return None
    key = user.get("demoApiKey") or user.get("apiKey")
    return key if isinstance(key, str) and key else None
