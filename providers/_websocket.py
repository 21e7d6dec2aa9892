"""WebSocket I/O over curl_cffi (the browser's TLS fingerprint, our exact headers): connect, send, receive, close.

Only bytes move here; ``_agent_protocol`` knows what they mean. Every wait has a deadline given by the caller:
the upgrade (curl runs it in a worker thread that cannot be interrupted, so curl's own timeout bounds it and we
wait no longer), each received message, and the closing handshake. curl_cffi's errors become ours here, through
the transport's one translator.

An upgrade answered with anything but ``101`` is refused: curl_cffi hands back a socket that is not one, so we
read the status and the headers of that answer ourselves and raise the typed error for it (a challenge, 401 or
403 then heals like any other request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from curl_cffi import CurlError, CurlInfo, CurlOpt, CurlWsFlag
from curl_cffi.requests import AsyncSession, AsyncWebSocket
from curl_cffi.requests.websockets import WebSocketClosed, WebSocketTimeout

from ._decode import error_for_status
from ._exceptions import ProviderTimeout, StreamError
from ._transport._errors import translate_curl_error

# The longest we wait for the closing handshake before dropping the connection.
_CLOSE_TIMEOUT = 1.0
_TEXT = int(CurlWsFlag.TEXT)
_CLOSE = int(CurlWsFlag.CLOSE)
# Messages curl_cffi may hold before its reader waits for us: a burst of small deltas fits.
_RECV_QUEUE = 1024
_MAX_MESSAGE = 4 * 1024 * 1024
# Sockets one connector keeps open at once (a chat holds one for its reply).
_MAX_SOCKETS = 256


class WebSocketConnector:
    """Opens WebSockets; owns the curl_cffi session they share. ``aclose()`` closes it and every socket.

    At most ``max_sockets`` are open at once (each holds a curl handle of the session, which refuses more than
    it has); a connect beyond that waits for a socket to close, within its own timeout.
    """

    def __init__(self, max_sockets: int = _MAX_SOCKETS) -> None:
        self._session: AsyncSession[Any] | None = None
        self._max_sockets = max_sockets
        # One slot per open socket (or upgrade under way), released when the socket closes.
        self._slots = asyncio.Semaphore(max_sockets)
        self._closed = False

    def _session_for(self) -> AsyncSession[Any]:
        if self._closed:
            raise RuntimeError("the WebSocket connector is closed")
        if self._session is None:
            # discard_cookies: the session's jar must not carry one record's cookies into another socket;
            # every socket sends exactly the Cookie line it is given.
            self._session = AsyncSession(discard_cookies=True, max_clients=self._max_sockets)
        return self._session

    async def connect(
        self,
        url: str,
        headers: Sequence[tuple[str, str]],
        *,
        timeout: float,
        impersonate: str | None = None,
        proxy: str | None = None,
        provider: str | None = None,
    ) -> WebSocket:
        """Open a socket to ``url`` sending exactly ``headers`` (plus the WebSocket handshake's own).

        Raises:
            ResponseStatusError: the upgrade was refused (``CloudflareError`` for a challenge).
            ConnectError, ProviderTimeout, TransportError: the connection failed or took longer than ``timeout``.
        """
        session = self._session_for()
        timeout = max(0.001, timeout)
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderTimeout(
                f"{url}: all {self._max_sockets} sockets stayed busy for {timeout:g} s", url=url, provider=provider
            ) from None
        try:
            left = timeout - (asyncio.get_running_loop().time() - started)
            return await self._connect(session, url, headers, max(0.001, left), impersonate, proxy, provider)
        except BaseException:
            self._slots.release()
            raise

    async def _connect(
        self,
        session: AsyncSession[Any],
        url: str,
        headers: Sequence[tuple[str, str]],
        timeout: float,
        impersonate: str | None,
        proxy: str | None,
        provider: str | None,
    ) -> WebSocket:
        lines: list[bytes] = []

        def on_header(line: bytes) -> int:
            lines.append(bytes(line))
            return len(line)

        options: dict[CurlOpt, Any] = {CurlOpt.HEADERFUNCTION: on_header}
        if proxy:
            # A session harvested through a proxy is replayed through it, whatever $no_proxy says.
            options[CurlOpt.NOPROXY] = ""
        try:
            async with asyncio.timeout(timeout + 1.0):  # curl's own timeout fires first; this is the backstop
                ws = await session.ws_connect(
                    url,
                    headers=list(headers),
                    impersonate=impersonate,  # type: ignore[arg-type]
                    default_headers=False,
                    accept_encoding="gzip, deflate, br, zstd",  # what Chrome sends on the upgrade
                    proxy=proxy,
                    timeout=timeout,
                    autoclose=False,
                    recv_queue_size=_RECV_QUEUE,
                    max_message_size=_MAX_MESSAGE,
                    curl_options=options,
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"{url}: no WebSocket upgrade within {timeout:g} s", url=url, provider=provider
            ) from None
        except CurlError as exc:
            # Depending on the answer, curl refuses the upgrade itself ("Refused WebSocket upgrade: 403").
            refused, head = _last_head(lines)
            if refused >= 300:
                raise error_for_status(refused, dict(head), b"", provider=provider or "?", url=url) from exc
            error = translate_curl_error(exc, url=url, in_body=False)
            if hasattr(error, "provider"):
                error.provider = provider
            raise error from exc
        status = ws.curl.getinfo(CurlInfo.RESPONSE_CODE)
        if status != 101:
            ws.terminate()
            _, head = _last_head(lines)
            raise error_for_status(int(status), dict(head), b"", provider=provider or "?", url=url)  # type: ignore[arg-type]
        set_cookies = [value for name, value in _last_head(lines)[1] if name == "set-cookie"]
        return WebSocket(ws, url, provider, set_cookies, self._slots.release)

    async def aclose(self) -> None:
        """Close the session (and with it any socket still open). Closing twice is fine."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _last_head(lines: list[bytes]) -> tuple[int, list[tuple[str, str]]]:
    """The status and the headers (lower-case names) of the last response head among the header lines."""
    status = 0
    head: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.decode("latin-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            parts = line.split(" ", 2)
            status, head = (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), []
        elif ":" in line:
            name, _, value = line.partition(":")
            head.append((name.strip().lower(), value.strip()))
    return status, head


class WebSocket:
    """One open socket: ``send`` text messages, ``receive`` whole messages, ``aclose`` (twice is fine)."""

    __slots__ = ("_release", "_ws", "provider", "set_cookies", "url")

    def __init__(
        self,
        ws: AsyncWebSocket,
        url: str,
        provider: str | None,
        set_cookies: list[str],
        release: Callable[[], None] | None = None,
    ) -> None:
        self._ws = ws
        self._release = release  # gives the connector's slot back, once
        self.url = url
        self.provider = provider
        #: ``Set-Cookie`` values of the upgrade answer (Cloudflare refreshes ``__cf_bm`` there).
        self.set_cookies = set_cookies

    async def send(self, message: bytes | str) -> None:
        """Queue one text message (curl_cffi's writer sends it in order)."""
        try:
            await self._ws.send(message, _TEXT)
        except CurlError as exc:
            raise StreamError(f"{self.url}: the socket failed while sending: {exc}", provider=self.provider) from exc

    async def receive(self, timeout: float) -> bytes | None:
        """The next whole message (fragments joined), or None once the peer closed the socket.

        Raises:
            ProviderTimeout: nothing arrived within ``timeout`` seconds.
            StreamError: the connection broke (not a close).
        """
        try:
            data, flags = await self._ws.recv(timeout=max(0.0, timeout))
        except WebSocketTimeout:
            raise ProviderTimeout(
                f"{self.url}: no message within {timeout:g} s", provider=self.provider, url=self.url
            ) from None
        except WebSocketClosed:
            return None
        except CurlError as exc:
            raise StreamError(f"{self.url}: the socket broke off: {exc}", provider=self.provider) from exc
        if flags & _CLOSE:
            return None
        return data

    async def aclose(self) -> None:
        """Send a close frame and wait briefly for the peer's; the connection is dropped in any case."""
        ws = self._ws
        release, self._release = self._release, None
        try:
            if ws.closed:
                ws.terminate()
                return
            try:
                await ws.close(1000, timeout=_CLOSE_TIMEOUT)
            except CurlError:
                ws.terminate()
        finally:
            if release is not None:
                release()
