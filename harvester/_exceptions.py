"""Errors raised by the harvester.

Every error has one root, so a caller (the CLI, the daemon, a provider client) can catch them all::

    HarvestError
    ├── ChallengeTimeout        the challenge did not clear before the deadline
    ├── BlockedError            the site answered "Access denied" (or kept failing with 5xx)
    ├── BrowserError            Chromium is missing, crashed, or unreachable over CDP
    ├── SiteUnreachableError    the site cannot be reached (refused, DNS, TLS, no answer); the browser is fine
    ├── NeedsHeadfulError       an interactive challenge or a login: a person must act once
    ├── ProxyAuthError          the proxy refused the browser's credentials, or wants some (HTTP 407)
    ├── UnknownProviderError    no recipe by that name
    ├── InvalidURLError         a URL that is not http(s), or that carries a password (also a ValueError)
    └── ConfigError             the config file is malformed (names the key and the line)

Misuse (calling a closed ``Harvester``) raises ``RuntimeError`` instead, so ``except HarvestError``
never swallows a bug; and only the errors a driver, CDP or the connection raise become ``BrowserError``
(``_driver.translate_error``): anything else is a bug and reaches the caller as it is.
"""

from __future__ import annotations

from collections.abc import Iterable


class HarvestError(Exception):
    """Root of every error the harvester raises."""

    def __init__(self, message: str, *, provider: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.url = url


class ChallengeTimeout(HarvestError):
    """The challenge was still running when the deadline passed."""

    def __init__(self, message: str, *, provider: str | None = None, url: str | None = None, timeout: float) -> None:
        super().__init__(message, provider=provider, url=url)
        self.timeout = timeout


class BlockedError(HarvestError):
    """The site refused this browser outright (a block page, or HTTP 5xx until the deadline)."""

    def __init__(
        self, message: str, *, provider: str | None = None, url: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, provider=provider, url=url)
        self.status = status


class BrowserError(HarvestError):
    """Chromium could not be found or started, or it died or stopped answering mid-harvest."""


class SiteUnreachableError(HarvestError):
    """The site could not be reached: connection refused, DNS, TLS, an unsafe port, or no answer in time."""

    def __init__(
        self, message: str, *, provider: str | None = None, url: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, provider=provider, url=url)
        self.reason = reason  # Chromium's net error code (ERR_CONNECTION_REFUSED), or "no answer"


class NeedsHeadfulError(HarvestError):
    """A person must act once (an interactive challenge or a login) in a visible browser."""

    def __init__(
        self, message: str, *, provider: str | None = None, url: str | None = None, reason: str = "interactive"
    ) -> None:
        super().__init__(message, provider=provider, url=url)
        self.reason = reason


class ProxyAuthError(HarvestError):
    """The proxy answered 407: the credentials in the proxy URL are wrong, or it wants some and got none."""

    def __init__(
        self, message: str, *, provider: str | None = None, url: str | None = None, proxy: str | None = None
    ) -> None:
        super().__init__(message, provider=provider, url=url)
        self.proxy = proxy  # the proxy's address, without credentials


class UnknownProviderError(HarvestError):
    """No recipe has this name."""

    def __init__(self, provider: str, known: Iterable[str]) -> None:
        self.known = sorted(known)
        super().__init__(
            f"unknown provider {provider!r}; known providers: {', '.join(self.known)} "
            "(or use `harvest --url URL` for any other site)",
            provider=provider,
        )


class InvalidURLError(HarvestError, ValueError):
    """A URL given to harvest (``--url``, ``--base-url``, a base URL in the config) that cannot be used."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message, url=url)


class ConfigError(HarvestError):
    """The config file cannot be used; the message names the file, the key and the line."""

    def __init__(
        self, message: str, *, path: str | None = None, key: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.line = line


class UnsupportedDependency(ImportError):
    """An installed library is not the version a module of harvest was written against (it relies on that version's
    internals, fenced in one module): raised when that module is imported, with what to install instead."""
