"""The Chromium process: find it, launch it in its own process group, and always tear it down.

The drivers (nodriver, playwright) only *attach* to the browser over CDP; this module owns the process, the
temp profile and the cleanup, because neither library waits for its browser to exit or removes its profile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import BrowserError
from ._launch import (
    BASE_FLAGS,
    OWNER_FILE,
    PROFILE_PREFIX,
    Launch,
    browser_args,
    find_browser,
    has_display,
    is_headless_shell,
    make_profile_dir,
    prepare_profile,
    remove_stale_profiles,
    spawn,
    spawn_options,
)
from ._reaper import REAPER, our_children

# Re-exported: launching is ``_launch``'s, and callers know these names from here.
__all__ = [
    "BASE_FLAGS",
    "OWNER_FILE",
    "PROFILE_PREFIX",
    "TAB_CLOSED",
    "BrowserProcess",
    "BrowserVersion",
    "browser_args",
    "find_browser",
    "has_display",
    "make_profile_dir",
    "remove_stale_profiles",
]

_ENDPOINT_MARK = "DevTools listening on "
_REAP_POLL = 0.005  # seconds between waitpid polls while killed helpers exit (they take a few ms each)


#: What both drivers raise (as BrowserError) when a tab is gone though the browser is not: with --headful the
#: person may close the window before the harvest is done.
TAB_CLOSED = "the browser tab was closed before the harvest finished; run again and leave it open until it is done"


@dataclass(frozen=True, slots=True)
class BrowserVersion:
    """What the browser says about itself (CDP ``Browser.getVersion``)."""

    product: str  # "Chrome/156.0.8078.79"
    user_agent: str  # "Mozilla/5.0 (...) HeadlessChrome/156.0.0.0 Safari/537.36"

    @property
    def full_version(self) -> str:
        """The dotted version, e.g. ``156.0.8078.79``."""
        return self.product.partition("/")[2] or "0.0.0.0"

    @property
    def major(self) -> int:
        """The major version, e.g. ``156``."""
        head = self.full_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0


class BrowserProcess:
    """One Chromium process with a fresh temp profile, in its own process group.

    Use as ``async with BrowserProcess(path) as proc:``; ``proc.endpoint`` is the browser's DevTools
    WebSocket URL. :meth:`stop` is idempotent and runs on every exit path.
    """

    def __init__(
        self, executable: str, *, headful: bool = False, start_timeout: float = 20.0, nice: int | None = None
    ) -> None:
        self.executable = executable
        self.headful = headful
        self.start_timeout = start_timeout
        #: None: Chromium runs as it likes (as root it raises some of its threads to niceness -8). A number (0 to 19):
        #: it runs that much nicer than us and cannot raise any thread above that (the daemon's background browser
        #: then never outranks the cache's readers and clients on its host).
        self.nice = nice
        self.endpoint = ""
        self.profile_dir: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        # The last lines Chromium printed, for the error message if it dies; bounded so a chatty browser
        # in a week-long daemon cannot grow memory.
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._drain: asyncio.Task[None] | None = None
        self._helpers: set[int] = set()
        # Started by spawn() before an event loop ran; start() adopts it.
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The browser's process id (also its process group id), or None before start."""
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        """True while the browser process is running."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the browser has exited."""
        return self._proc.returncode if self._proc else None

    def describe_exit(self) -> str:
        """A short human description of why the browser is gone, for error messages."""
        code = self.returncode
        how = "is not running" if code is None else f"exited with status {code}"
        tail = " | ".join(line for line in self._stderr_tail if line.strip())[-300:]
        return f"Chromium {how}" + (f" ({tail})" if tail else "")

    async def __aenter__(self) -> BrowserProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def spawn(self) -> None:
        """Start Chromium now, without an event loop; :meth:`start` then adopts it and waits for its endpoint.

        Raises:
            BrowserError: the executable is missing, or no profile can be made.
        """
        if self._proc is not None or self._popen is not None:
            raise RuntimeError("BrowserProcess started twice")
        self._take(spawn(self.executable, headful=self.headful, nice=self.nice))

    @classmethod
    def adopt(cls, launch: Launch) -> BrowserProcess:
        """The process for a Chromium that ``_launch.spawn`` started (the ``harvest`` command forks it before its
        imports); :meth:`start` waits for its endpoint and :meth:`stop` stops it, as for one it spawned."""
        if launch.owner is not None:
            raise RuntimeError("this launch is already adopted")
        process = cls(launch.executable, headful=launch.headful)
        process._take(launch)
        return process

    def _take(self, launch: Launch) -> None:
        launch.owner = self
        self.profile_dir = launch.profile_dir
        self._popen = launch.popen

    async def start(self) -> None:
        """Launch the browser (or adopt the one :meth:`spawn` started) and wait (under ``start_timeout``) for
        its DevTools endpoint.

        Raises:
            BrowserError: the executable is missing, or the browser died or stayed silent.
        """
        if self._proc is not None:
            raise RuntimeError("BrowserProcess.start() called twice")
        if self._popen is not None:
            spawned = _Spawned(self._popen)
            self._proc = spawned  # type: ignore[assignment]  # (the part of a Process this module uses)
            await spawned.read_stderr()
            # Left for now by spawn(), which had a browser to start first.
            await asyncio.to_thread(remove_stale_profiles)
        else:
            # Profiles of harvests that were SIGKILLed (their teardown never ran) go first.
            await asyncio.to_thread(remove_stale_profiles)
            self.profile_dir = prepare_profile(self.headful, self.executable)
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    self.executable,
                    *browser_args(self.profile_dir, headful=self.headful, shell=is_headless_shell(self.executable)),
                    **spawn_options(self.profile_dir, self.nice),
                )
            except OSError as exc:
                await self.stop()
                raise BrowserError(f"cannot start {self.executable}: {exc.strerror or exc}") from exc
            # From now on its helpers that end up ours are reaped as they exit (an interrupt during launch too).
            REAPER.started(self._proc.pid)
        try:
            async with asyncio.timeout(self.start_timeout):
                self.endpoint = await self._read_endpoint()
        except TimeoutError:
            await self.stop()
            raise BrowserError(
                f"Chromium did not announce its DevTools endpoint within {self.start_timeout:g} s"
            ) from None
        except BaseException:
            await self.stop()
            raise
        self._helpers = _helper_children(self.profile_dir)
        # Keep reading stderr: a full pipe would block the browser.
        self._drain = asyncio.create_task(self._drain_stderr())

    async def _read_endpoint(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            raw = await self._proc.stderr.readline()
            if not raw:
                await self._proc.wait()
                hint = ""
                if self.headful:
                    where = os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY")
                    hint = f"; --headful needs a display Chromium can open (is {where!r} reachable?)"
                raise BrowserError(self.describe_exit() + hint)
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            if _ENDPOINT_MARK in line:
                return line.split(_ENDPOINT_MARK, 1)[1].strip()

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        with contextlib.suppress(Exception):
            while raw := await self._proc.stderr.readline():
                self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    async def version(self, timeout: float = 5.0) -> BrowserVersion:
        """Ask the running browser for its version over the DevTools HTTP endpoint.

        Raises:
            BrowserError: the endpoint did not answer in time.
        """
        parts = urlsplit(self.endpoint)
        try:
            async with asyncio.timeout(timeout):
                data = await _http_get_json(parts.hostname or "127.0.0.1", parts.port or 9222, "/json/version")
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            raise BrowserError(f"Chromium's DevTools endpoint did not answer: {exc!r}") from exc
        return BrowserVersion(product=str(data.get("Browser", "")), user_agent=str(data.get("User-Agent", "")))

    async def stop(self, grace: float = 2.0) -> None:
        """Kill the process group, reap it (waiting at most ``grace`` seconds per step) and delete the profile.

        Safe to call more than once and from ``finally`` blocks: it shields itself from cancellation, so a
        cancelled harvest still leaves no process and no profile behind.
        """
        task = asyncio.ensure_future(self._stop(grace))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Finish the teardown anyway, then let the cancellation continue.
            await task
            raise

    async def _stop(self, grace: float) -> None:
        if self._proc is None and self._popen is not None:
            self._proc = _Spawned(self._popen)  # type: ignore[assignment]  # spawned, never started
        proc = self._proc
        early: asyncio.Future[None] | None = None
        if proc is not None:
            if proc.returncode is None:
                # SIGKILL, not SIGTERM: the profile is thrown away, so a graceful shutdown (which flushes it)
                # would only cost time; the group kill reaches every helper at once.
                _signal_group(proc.pid, signal.SIGKILL)
            if self.profile_dir is not None:
                # Deleting ~100 files takes tens of ms on a real disk: do it while the killed processes exit
                # (they run no more code); the pass after the reap below removes anything left.
                early = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, self.profile_dir, True))
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace)
            # Helpers may outlive the main process briefly; kill what is left and reap those re-parented to us.
            await _reap_group(proc.pid, deadline=time.monotonic() + grace)
            # Found again now, not only remembered: an interrupt during launch comes before they are recorded.
            helpers = self._helpers | _helper_children(self.profile_dir)
            deadline = time.monotonic() + grace
            await _reap_pids(helpers, deadline=deadline)
            # A handler forked just before the kill joins us (its subreaper) a moment later: look again until a
            # look finds none, within the same deadline.
            while (late := _helper_children(self.profile_dir)) and time.monotonic() < deadline:
                await _reap_pids(late, deadline=deadline)
            self._helpers = set()
            if self._drain is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._drain, 1.0)
                self._drain = None
            REAPER.stopped(proc.pid)
            await asyncio.to_thread(REAPER.reap_now)
            if proc.stderr is not None:
                # Close the pipe transport now, or asyncio warns about it when it is garbage-collected.
                transport = getattr(proc, "_transport", None)
                if transport is not None:
                    transport.close()
            if isinstance(proc, _Spawned):
                proc.close_pipe()
        if early is not None:
            with contextlib.suppress(Exception):
                await early
        if self.profile_dir is not None:
            await _remove_tree(self.profile_dir)
            self.profile_dir = None


class _Spawned:
    """What this module uses of an ``asyncio.subprocess.Process``, for a Chromium that ``subprocess.Popen``
    started before the event loop ran (``BrowserProcess.spawn``)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stderr: asyncio.StreamReader | None = None  # set by read_stderr()
        self._transport: Any = None  # closed by BrowserProcess._stop, as asyncio's own

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()  # WNOHANG; the reaper leaves this pid to us (REAPER.started)

    async def wait(self) -> int:
        while (code := self._popen.poll()) is None:  # noqa: ASYNC110 (not asyncio's child: no event to await)
            await asyncio.sleep(_REAP_POLL)
        return code

    async def read_stderr(self) -> None:
        """Read the browser's stderr on the running loop (as ``create_subprocess_exec`` would)."""
        assert self._popen.stderr is not None
        reader = asyncio.StreamReader()
        self._transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._popen.stderr
        )
        self.stderr = reader

    def close_pipe(self) -> None:
        """Close stderr if no transport took it over (a browser stopped before it was started)."""
        if self._transport is None and self._popen.stderr is not None:
            self._popen.stderr.close()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _reap_group(pgid: int, *, deadline: float) -> None:
    while True:
        reaped_any = False
        with contextlib.suppress(ChildProcessError):
            while True:
                pid, _ = os.waitpid(-pgid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG never blocks)
                if pid == 0:
                    break
                reaped_any = True
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return  # nothing left in the group
        if time.monotonic() > deadline:
            return
        if not reaped_any:
            await asyncio.sleep(_REAP_POLL)


def _helper_children(profile_dir: str | None) -> set[int]:
    """Our children named chrome_crashpad*, of this profile's browser (by its $TMPDIR) or already exited.

    Chromium double-forks its crash handlers into their own session, so the group kill misses them, and as
    subreaper we inherit them (flags that disable them also break navigation in Chromium 156). A live one is
    ours to kill only if it belongs to this profile; one that has exited (a zombie) is nobody else's to reap.
    """
    if not sys.platform.startswith("linux"):
        return set()
    mark = f"TMPDIR={profile_dir}".encode() if profile_dir else None
    found = set()
    for pid, state, _group, comm in our_children():
        if comm.startswith("chrome_crashpad") and state == "Z":
            found.add(pid)
            continue
        # Not only by name: a handler caught between its fork (own session already) and its exec is still
        # called "chromium"; its environment already carries this profile's TMPDIR.
        if mark is None or state == "Z":
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if mark in environ:
            found.add(pid)
    return found


async def _reap_pids(pids: set[int], *, deadline: float) -> None:
    pending = set(pids)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    while pending:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG never blocks)
            except ChildProcessError:
                done = pid  # not (or no longer) our child
            if done:
                pending.discard(pid)
        if not pending or time.monotonic() > deadline:
            return
        await asyncio.sleep(_REAP_POLL)


async def _remove_tree(path: str) -> None:
    # The browser may still be flushing files for a moment after it exits; retry briefly.
    for _ in range(10):
        if not os.path.exists(path):  # noqa: ASYNC240 (one stat of a local temp dir)
            return
        # In a thread: a profile is ~100 files, which would stall the event loop for tens of ms.
        await asyncio.to_thread(shutil.rmtree, path, True)
        if not os.path.exists(path):  # noqa: ASYNC240
            return
        await asyncio.sleep(0.05)


async def _http_get_json(host: str, port: int, path: str) -> dict[str, Any]:
    """A minimal HTTP/1.1 GET, so asking the version needs no HTTP library."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        # DevTools keeps the connection open whatever we ask, so read exactly Content-Length bytes.
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("unexpected /json/version answer")
    return data
