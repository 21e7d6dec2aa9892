"""FlareSolverr's ``POST /v1``, answered from the cache first.

- ``request.get`` / ``request.post`` with a usable record fetch the page with the record's identity (real status
  and headers); only no usable record, or a challenge met by that fetch, starts a browser run (single flight).
- ``returnOnlyCookies`` answers from the cache with no fetch at all.
- ``sessions.*`` name records; a session is bound to the proxy it was created with.

Errors are HTTP 500 with ``status: "error"`` and ``message: "Error: ..."``, as FlareSolverr answers them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
from aiohttp import web

from cache import CacheError, Cookie, SessionRecord
from harvester._classify import PageState
from harvester._exceptions import HarvestError
from harvester.daemon._logging import log_event
from providers._exceptions import ProviderError, ProviderTimeout
from providers._session import FALLBACK_USER_AGENT

from ._app import BadRequest
from ._fetch import Fetched, FetchError, fetch
from ._limits import Full
from ._runs import Harvested
from ._sessions import Session, SessionNameError, record_name, usable

if TYPE_CHECKING:
    from ._app import ServeState

logger = logging.getLogger("harvest.serve")

DEFAULT_MAX_TIMEOUT = 60000  # ms, FlareSolverr's default
#: The harvester's page snapshot cuts the HTML at this many characters (SNAPSHOT_JS): a page that long is fetched.
PAGE_HTML_LIMIT = 500_000
_KNOWN_FIELDS = frozenset(
    {"cmd", "url", "session", "session_ttl_minutes", "maxTimeout", "cookies", "returnOnlyCookies", "proxy", "postData"}
)
_COMMANDS = ("request.get", "request.post", "sessions.create", "sessions.list", "sessions.destroy")


@dataclass(frozen=True, slots=True)
class _Ask:
    """A checked ``request.get`` / ``request.post``: what to fetch, for which record, through which proxy, by when."""

    url: str
    method: str
    body: bytes | None
    cookies: dict[str, str]
    name: str  # the record: the session's, else the URL's host
    session: Session | None
    proxy: str | None
    only_cookies: bool
    deadline: float  # loop time


class CommandError(Exception):
    """A FlareSolverr error: answered as HTTP 500 with ``message: "Error: <this message>"``."""


def error_body(message: str, started_ms: int, version: str) -> bytes:
    """FlareSolverr's error document."""
    return orjson.dumps(
        {
            "status": "error",
            "message": f"Error: {message}",
            "startTimestamp": started_ms,
            "endTimestamp": _now_ms(),
            "version": version,
        }
    )


def _cmd_of(payload: Any) -> str | None:
    cmd = payload.get("cmd") if isinstance(payload, dict) else None
    return cmd if cmd in _COMMANDS else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class FlareSolverr:
    """The ``POST /v1`` handler over the server's shared state."""

    def __init__(self, state: ServeState) -> None:
        self.state = state
        self.last_user_agent = FALLBACK_USER_AGENT

    # -- GET / and GET /health ------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        """FlareSolverr's ready message (clients probe it)."""
        body = {"msg": "FlareSolverr is ready!", "version": self.state.version, "userAgent": self.last_user_agent}
        return _json(body)

    async def health(self, request: web.Request) -> web.Response:
        """``{"status": "ok"}``."""
        return _json({"status": "ok"})

    # -- POST /v1 -------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Run one command; every failure is FlareSolverr's HTTP 500 error document."""
        started = _now_ms()
        payload: Any = None
        try:
            payload = await self.state.read_json(request)
            if not isinstance(payload, dict):
                raise CommandError("the request body must be a JSON object")
            body = await self._dispatch(payload)
        except BadRequest as exc:
            if exc.status != 400:
                raise  # 413 keeps its status
            return self._error(str(exc), started, payload)  # FlareSolverr answers every bad request with 500
        except CommandError as exc:
            return self._error(str(exc), started, payload)
        body.update(startTimestamp=started, endTimestamp=_now_ms(), version=self.state.version)
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _error(self, message: str, started: int, payload: Any) -> web.Response:
        # No message in the log: URLs and errors may carry secrets.
        log_event(logger, logging.INFO, "serve.v1.error", cmd=_cmd_of(payload))
        body = error_body(message, started, self.state.version)
        return web.Response(body=body, status=500, content_type="application/json")

    async def _dispatch(self, payload: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(payload) - _KNOWN_FIELDS)
        if unknown:
            # Names only, never values (a value may be a secret).
            log_event(logger, logging.INFO, "serve.v1.ignored", fields=",".join(unknown)[:200])
        cmd = payload.get("cmd")
        if cmd is None:
            raise CommandError("Request parameter 'cmd' is mandatory.")
        if cmd not in _COMMANDS:
            raise CommandError(f"Request parameter 'cmd' = {str(cmd)[:100]!r} is invalid.")
        max_timeout = payload.get("maxTimeout")
        if not isinstance(max_timeout, int | float) or isinstance(max_timeout, bool) or max_timeout < 1:
            max_timeout = DEFAULT_MAX_TIMEOUT
        seconds = max_timeout / 1000
        try:
            # maxTimeout bounds the two waits of a request, the browser run and the fetch (each under
            # ``timeout_at`` its deadline): an answer from the cache sets no timer at all.
            if cmd == "sessions.create":
                return self._sessions_create(payload)
            if cmd == "sessions.list":
                return {"status": "ok", "message": "", "sessions": self.state.sessions.names()}
            if cmd == "sessions.destroy":
                return self._sessions_destroy(payload)
            return await self._request(payload, "POST" if cmd == "request.post" else "GET", seconds)
        except TimeoutError:
            raise CommandError(f"Error solving the challenge. Timeout after {seconds:g} seconds.") from None
        except CacheError as exc:
            raise CommandError(f"the session cache failed: {exc}") from None

    # -- sessions -------------------------------------------------------------------------------------------

    def _sessions_create(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        raw = payload.get("session")
        name = self._name(raw) if raw else _new_session_id()
        ttl = payload.get("session_ttl_minutes")
        proxy = _proxy_url(payload.get("proxy"))
        session, fresh = self.state.sessions.create(
            name, proxy=proxy, ttl_minutes=ttl if isinstance(ttl, int) else None
        )
        message = "Session created successfully." if fresh else "Session already exists."
        return {"status": "ok", "message": message, "session": session.name}

    def _sessions_destroy(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        raw = payload.get("session")
        if not raw:
            raise CommandError("Request parameter 'session' is mandatory in 'sessions.destroy' command.")
        if not self.state.sessions.destroy(self._name(raw)):
            raise CommandError("The session doesn't exist.")
        return {"status": "ok", "message": "The session has been removed."}

    def _name(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise CommandError("Request parameter 'session' must be a string.")
        try:
            return record_name(raw)
        except SessionNameError as exc:
            raise CommandError(str(exc)) from None

    # -- request.get / request.post ---------------------------------------------------------------------------

    async def _request(self, payload: Mapping[str, Any], method: str, seconds: float) -> dict[str, Any]:
        ask = self._ask(payload, method, seconds)
        record = self.state.cache.get(ask.name)
        if not usable(record, proxy=ask.proxy, ttl=ask.session.ttl if ask.session else None):
            return await self._from_run(ask, await self._run(ask, stale=record))
        assert record is not None
        if ask.only_cookies:
            return self._solution(ask.url, record, None, False)
        return await self._from_fetch(ask, record)

    def _ask(self, payload: Mapping[str, Any], method: str, seconds: float) -> _Ask:
        """The request's fields, checked; its record name and proxy (a session's own, else the request's)."""
        url = payload.get("url")
        if not isinstance(url, str) or not url:
            raise CommandError(f"Request parameter 'url' is mandatory in 'request.{method.lower()}' command.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"Request parameter 'url' must be an http(s) URL, not {url[:200]!r}.")
        post_data = payload.get("postData")
        body: bytes | None = None
        if method == "POST":
            if not isinstance(post_data, str):
                raise CommandError("Request parameter 'postData' is mandatory in 'request.post' command.")
            body = post_data.removeprefix("?").encode()
        elif post_data is not None:
            raise CommandError("Cannot use 'postBody' when sending a GET request.")
        cookies = _request_cookies(payload.get("cookies"))
        session = None
        if payload.get("session"):
            name = self._name(payload["session"])
            session = self.state.sessions.get(name)
            if session is None:
                raise CommandError("The session doesn't exist.")
            proxy = session.proxy  # a session is bound to its proxy; the request's is ignored
        else:
            name = self._name(parts.hostname)
            proxy = _proxy_url(payload.get("proxy"))
            self.state.secrets_seen(proxy)
        return _Ask(
            url=url,
            method=method,
            body=body,
            cookies=cookies,
            name=name,
            session=session,
            proxy=proxy,
            only_cookies=bool(payload.get("returnOnlyCookies")),
            deadline=asyncio.get_running_loop().time() + seconds,
        )

    async def _from_fetch(self, ask: _Ask, record: SessionRecord) -> dict[str, Any]:
        """The answer from a usable record: the page fetched with it, or a browser run's when it meets a challenge."""
        fetched = await self._fetch(ask, record)
        if fetched.challenged:
            return await self._from_run(ask, await self._run(ask, stale=record))
        return self._solution(ask.url, record, fetched, False)

    async def _from_run(self, ask: _Ask, harvested: Harvested) -> dict[str, Any]:
        """The answer after a browser run: its cookies, the page it saw, or the page fetched with its record."""
        record = harvested.record
        answer: Fetched | PageState | None = None
        if not ask.only_cookies:
            answer = _page_for(harvested, ask.url, ask.method, ask.cookies)
            if answer is None:
                answer = await self._fetch(ask, record)
                if answer.challenged:
                    raise CommandError(
                        f"Error solving the challenge. {ask.url} still answers with a challenge right after a "
                        "browser cleared it."
                    )
        if ask.session is not None:
            self.state.sessions.mark(ask.session)
        return self._solution(ask.url, record, answer, True)

    async def _run(self, ask: _Ask, *, stale: SessionRecord | None) -> Harvested:
        deadline = ask.deadline
        remaining = deadline - asyncio.get_running_loop().time()
        url = _origin_url(ask.url, ask.method)
        try:
            async with asyncio.timeout_at(deadline):  # the run goes on for the others; this request gives up
                return await self.state.runs.run(
                    ask.name, url=url, proxy=ask.proxy, stale=stale, timeout=max(remaining, 1.0)
                )
        except Full:
            raise
        except HarvestError as exc:
            raise CommandError(f"Error solving the challenge. {exc}") from None
        except ValueError as exc:  # a proxy Chromium cannot use
            raise CommandError(str(exc)) from None

    async def _fetch(self, ask: _Ask, record: SessionRecord) -> Fetched:
        try:
            async with asyncio.timeout_at(ask.deadline):
                return await fetch(
                    self.state.transport,
                    url=ask.url,
                    record=record,
                    method=ask.method,
                    body=ask.body,
                    cookies=ask.cookies,
                    proxy=ask.proxy,
                    deadline=ask.deadline,
                )
        except ProviderTimeout:
            raise TimeoutError from None  # the transport's clock ran out first: the same maxTimeout error
        except (ProviderError, FetchError) as exc:
            raise CommandError(f"Error solving the challenge. {exc}") from None
        except ValueError as exc:
            raise CommandError(f"Error solving the challenge. {exc}") from None

    def _solution(
        self, url: str, record: SessionRecord, answer: Fetched | PageState | None, ran: bool
    ) -> dict[str, Any]:
        user_agent = record.user_agent or FALLBACK_USER_AGENT
        self.last_user_agent = user_agent
        solution: dict[str, Any] = {"url": url, "status": 200}
        cookies = record.cookies
        if isinstance(answer, PageState):
            # The page the browser saw, with the status and headers of its document's response as the browser
            # received them (FlareSolverr answers 200 and {} whatever the page was).
            solution.update(
                url=answer.url or url, status=answer.status or 200, headers=answer.headers or {}, response=answer.html
            )
        elif answer is not None:
            solution.update(url=answer.url, status=answer.status, headers=answer.headers, response=answer.text)
            cookies = answer.cookies
        solution["cookies"] = [_cookie_json(c) for c in cookies]
        solution["userAgent"] = user_agent
        message = "Challenge solved!" if ran else "Challenge not detected!"
        return {"status": "ok", "message": message, "solution": solution}


def _cookie_json(cookie: Cookie) -> dict[str, Any]:
    return {
        "name": cookie.name,
        "value": cookie.value,
        "domain": cookie.domain,
        "path": cookie.path,
        "expires": cookie.expires if cookie.expires is not None else -1,  # -1: a session cookie, as browsers say
        "httpOnly": cookie.http_only,
        "secure": cookie.secure,
        "sameSite": cookie.same_site or "Lax",
    }


def _request_cookies(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise CommandError("Request parameter 'cookies' must be a list of {name, value} objects.")
    cookies: dict[str, str] = {}
    for item in raw:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("value"), str)
        ):
            raise CommandError("Request parameter 'cookies' must be a list of {name, value} objects.")
        name, value = item["name"], item["value"]
        if not name or any(c in name + value for c in "\r\n\0;"):
            raise CommandError("Request parameter 'cookies' has a name or value with a forbidden character.")
        cookies[name] = value
    return cookies


def _proxy_url(raw: Any) -> str | None:
    """``{"url", "username", "password"}`` as one proxy URL with the credentials in it."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
        raise CommandError("Request parameter 'proxy' must be an object with a 'url'.")
    url = raw["url"]
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https", "socks4", "socks5", "socks5h") or not parts.hostname:
        raise CommandError("Request parameter 'proxy.url' must be http(s):// or socks5:// with a host.")
    username, password = raw.get("username"), raw.get("password")
    netloc = parts.netloc.rpartition("@")[2]
    if isinstance(username, str) and username:
        credentials = quote(username, safe="")
        if isinstance(password, str) and password:
            credentials += ":" + quote(password, safe="")
        netloc = f"{credentials}@{netloc}"
    elif "@" in parts.netloc:
        netloc = parts.netloc
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def _page_for(harvested: Harvested | None, url: str, method: str, cookies: dict[str, str]) -> PageState | None:
    """The page a browser run saw, when it answers this request: a GET of the URL the browser opened, with no
    cookies of the request's own (the browser did not send them), and not cut at the snapshot's size limit."""
    if harvested is None or harvested.page is None or method != "GET" or cookies or harvested.url != url:
        return None
    page = harvested.page
    return page if len(page.html) < PAGE_HTML_LIMIT else None


def _origin_url(url: str, method: str) -> str:
    """What the browser opens: the URL itself for a GET, the site's front page for a POST."""
    if method == "GET":
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def _new_session_id() -> str:
    import uuid

    return str(uuid.uuid1())


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
