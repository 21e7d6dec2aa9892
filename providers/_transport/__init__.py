"""Transports: move request bytes out and response bytes in, and nothing else.

- ``_protocol.py``: ``Request``, the ``Response`` and ``AsyncTransport`` protocols (what a client needs).
- ``_pool.py``: ``CurlTransport``, the default: a pool of configured curl handles and one watchdog timer.
- ``_curl.py``: the fence around curl_cffi's private API (handles, the multi loop), pinned to its versions.
- ``_errors.py``: curl_cffi's errors mapped to ``TransportError`` and its subclasses.
- ``_mock.py``: ``MockTransport``, where a function answers.

Only ``_protocol`` and ``_mock`` are imported here: curl_cffi loads when a ``CurlTransport`` is first made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._mock import MockResponse, MockTransport
from ._protocol import AsyncTransport, Request, Response

if TYPE_CHECKING:
    from ._pool import CurlTransport

__all__ = ["AsyncTransport", "CurlTransport", "MockResponse", "MockTransport", "Request", "Response"]


def __getattr__(name: str) -> Any:
    if name == "CurlTransport":
        from ._pool import CurlTransport

        return CurlTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
