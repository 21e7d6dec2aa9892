"""Chromium's network errors (``net::ERR_...``): which of them mean "the site cannot be reached" (pure).

Both drivers see them: nodriver as ``Page.navigate``'s ``errorText``, playwright in ``page.goto``'s message,
and a page that navigated by itself shows Chromium's own error page (``chrome-error://``) with the code.
"""

from __future__ import annotations

import re

from ._exceptions import SiteUnreachableError

_NET_ERROR = re.compile(r"\b(?:net::)?(ERR_[A-Z0-9_]+)\b")

# The site (or the way to it) is down or refuses us; a new browser would not help.
_UNREACHABLE = {
    "ERR_CONNECTION_REFUSED": "connection refused",
    "ERR_CONNECTION_RESET": "connection reset",
    "ERR_CONNECTION_CLOSED": "the connection was closed",
    "ERR_CONNECTION_FAILED": "the connection failed",
    "ERR_CONNECTION_TIMED_OUT": "the connection timed out",
    "ERR_TIMED_OUT": "the request timed out",
    "ERR_EMPTY_RESPONSE": "the server closed the connection without answering",
    "ERR_NAME_NOT_RESOLVED": "the host name does not resolve (DNS)",
    "ERR_NAME_RESOLUTION_FAILED": "the host name lookup failed (DNS)",
    "ERR_ADDRESS_UNREACHABLE": "the address is unreachable",
    "ERR_ADDRESS_INVALID": "the address is invalid",
    "ERR_INTERNET_DISCONNECTED": "this machine is offline",
    "ERR_NETWORK_CHANGED": "the network changed",
    "ERR_NETWORK_ACCESS_DENIED": "network access denied",
    "ERR_UNSAFE_PORT": "Chromium refuses to connect to that port (an unsafe port)",
    "ERR_INVALID_RESPONSE": "the server sent an invalid response",
    "ERR_INVALID_HTTP_RESPONSE": "the server sent an invalid HTTP response",
    "ERR_TOO_MANY_REDIRECTS": "too many redirects",
    "ERR_SSL_PROTOCOL_ERROR": "the TLS handshake failed",
    "ERR_SSL_VERSION_OR_CIPHER_MISMATCH": "no TLS version or cipher in common",
    "ERR_PROXY_CONNECTION_FAILED": "cannot connect to the proxy",
    "ERR_TUNNEL_CONNECTION_FAILED": "the proxy could not open a tunnel to the site",
    "ERR_SOCKS_CONNECTION_FAILED": "the SOCKS proxy could not connect to the site",
}


def net_error_in(text: object) -> str | None:
    """The first ``ERR_...`` code in ``text`` (an errorText, an exception message, an error page), or None."""
    match = _NET_ERROR.search(str(text or ""))
    return match.group(1) if match else None


def is_unreachable(code: str | None) -> bool:
    """True for a net error that means the site cannot be reached (down, refused, DNS, TLS, unsafe port)."""
    if not code:
        return False
    return code in _UNREACHABLE or code.startswith(("ERR_CERT_", "ERR_SSL_"))


def describe_net_error(code: str) -> str:
    """A few words for a person (``connection refused``), or the code itself when it has none."""
    if code in _UNREACHABLE:
        return _UNREACHABLE[code]
    if code.startswith("ERR_CERT_"):
        return f"the site's TLS certificate is not valid ({code})"
    return f"the page failed to load ({code})"


def unreachable(url: str, text: object) -> SiteUnreachableError | None:
    """``SiteUnreachableError`` for a navigation error text that means the site cannot be reached, else None."""
    code = net_error_in(text)
    if code is None or not is_unreachable(code):
        return None
    return SiteUnreachableError(f"cannot reach {url}: {describe_net_error(code)}", url=url, reason=code)
