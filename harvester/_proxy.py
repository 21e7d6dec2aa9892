"""Proxy URLs for the browser (pure functions).

Chromium takes a proxy's address (``Target.createBrowserContext``'s ``proxyServer``, playwright's ``server``)
but no credentials in it: given ``http://user:pass@host:port`` it finds no usable proxy and every request fails
with ``net::ERR_NO_SUPPORTED_PROXIES``; given the bare address, an authenticating proxy answers 407. So the
drivers split the URL here, give Chromium the bare address, and answer the proxy's challenge themselves
(nodriver over CDP's Fetch domain, playwright through its ``username``/``password`` options). The record keeps
the URL as given, credentials included, for the clients (curl takes them from the URL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from ._exceptions import InvalidURLError, ProxyAuthError

#: The bypass list given with every proxy. Chromium never sends loopback traffic (localhost, 127.0.0.0/8,
#: [::1]) through a proxy unless the list subtracts its implicit loopback rule; without this a provider on
#: this machine (a local mirror, the test emulator) would be reached directly, not through the proxy the
#: user asked for, and the record would claim a proxy its cookies never saw.
LOOPBACK_BYPASS = "<-loopback>"

# Chromium's net errors for a proxy that wants credentials it did not get, or refused the ones it got.
_REFUSALS = (
    "ERR_INVALID_AUTH_CREDENTIALS",
    "ERR_PROXY_AUTH_REQUESTED",
    "ERR_PROXY_AUTH_UNSUPPORTED",
    "ERR_PROXY_AUTH_REQUESTED_WITH_NO_CONNECTION",
)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """A proxy URL split for Chromium: the bare address, and the credentials the driver answers with."""

    server: str  # the URL without credentials; safe to show
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def has_credentials(self) -> bool:
        """True when the URL carried a user name (and maybe a password)."""
        return self.username is not None


def parse_proxy(url: str) -> ProxySettings:
    """Split ``scheme://user:pass@host:port`` into the address and the (percent-decoded) credentials.

    A URL without credentials is passed on unchanged.

    Raises:
        InvalidURLError (a ValueError): credentials for a SOCKS proxy, which Chromium cannot authenticate to. The message never
            contains the password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority = rest.split("/", 1)[0]
    credentials, at, hostport = authority.rpartition("@")
    if not at:
        return ProxySettings(server=url)
    server = f"{scheme}://{hostport}" if sep else hostport
    if scheme.lower().startswith("socks"):
        raise InvalidURLError(
            f"Chromium cannot send credentials to a SOCKS proxy ({server}); use an http:// proxy with "
            "credentials, or a SOCKS proxy that needs none"
        )
    username, colon, password = credentials.partition(":")
    return ProxySettings(server=server, username=unquote(username), password=unquote(password) if colon else "")


def is_proxy_refusal(error_text: object) -> bool:
    """True for a Chromium net error (``net::ERR_...``, or a message holding one) that means the proxy wants
    credentials or refused them."""
    return isinstance(error_text, str) and any(code in error_text for code in _REFUSALS)


def proxy_refused(proxy: ProxySettings) -> ProxyAuthError:
    """The error for a proxy that answered 407: wrong credentials, or none given (never shows the password)."""
    if proxy.has_credentials:
        message = (
            f"the proxy {proxy.server} refused the credentials of user {proxy.username!r} (HTTP 407); check the "
            "user name and password in the proxy URL (percent-encode special characters, e.g. @ as %40)"
        )
    else:
        scheme, sep, hostport = proxy.server.partition("://")
        example = f"{scheme}://USER:PASSWORD@{hostport}" if sep else f"http://USER:PASSWORD@{proxy.server}"
        message = f"the proxy {proxy.server} asks for credentials (HTTP 407); give them in the proxy URL: {example}"
    return ProxyAuthError(message, proxy=proxy.server)
