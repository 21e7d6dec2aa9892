"""The Chromium process: find it, launch it in its own process group, and always tear it down.

The drivers (nodriver, playwright) only *attach* to the browser over CDP; this module owns the process, the
temp profile and the cleanup, because neither library waits for its browser to exit or removes its profile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import BrowserError
from ._reaper import REAPER, our_children

PROFILE_PREFIX = "harvest-profile-"
OWNER_FILE = "harvest-owner"  # in each profile: "<pid> <start time>" of the process that made it
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FALLBACK = "/usr/bin/chromium"
# Distribution wrappers (Debian's /usr/bin/chromium is a shell script) -> the binary they exec. Calling the
# binary directly skips a shell, `findmnt` and the wrapper's extension flags, which we do not want anyway.
_WRAPPED = {
    "/usr/bin/chromium": "/usr/lib/chromium/chromium",
    "/usr/bin/chromium-browser": "/usr/lib/chromium-browser/chromium-browser",
}
_ENDPOINT_MARK = "DevTools listening on "
# Chromium puts its singleton socket at $TMPDIR/.org.chromium.Chromium.XXXXXX/SingletonSocket and aborts at start
# when that path does not fit a Unix socket address (108 bytes with the NUL); TMPDIR is the profile itself.
_SOCKET_SUFFIX = "/.org.chromium.Chromium.XXXXXX/SingletonSocket"
_SUN_PATH_MAX = 107
_SHORT_TMP = "/tmp"
_REAP_POLL = 0.005  # seconds between waitpid polls while killed helpers exit (they take a few ms each)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_CAPBSET_DROP = 24
_CAP_SYS_NICE = 23

#: What both drivers raise (as BrowserError) when a tab is gone though the browser is not: with --headful the
#: person may close the window before the harvest is done.
TAB_CLOSED = "the browser tab was closed before the harvest finished; run again and leave it open until it is done"

#: Flags for a browser on a closed network that should look like an ordinary one.
BASE_FLAGS = (
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    # Translate, MediaRouter, OptimizationHints: services that would reach the network. The others cost every
    # harvest (every new browser context) a renderer of its own, about 0.16 s of CPU each on this machine:
    # SpareRendererForSitePerProcess keeps a warm renderer bound to the last context, so each new context kills it
    # and starts another; WebUIOmniboxPopup / WebUIOmniboxAimPopup open two hidden chrome://omnibox-popup WebUI
    # pages per context, even headless. None of them changes what a page can see.
    "--disable-features=Translate,MediaRouter,OptimizationHints,SpareRendererForSitePerProcess,WebUIOmniboxPopup,"
    "WebUIOmniboxAimPopup",
    # Without this Blink sets navigator.webdriver = true under remote debugging, and challenges refuse it.
    "--disable-blink-features=AutomationControlled",
    "--lang=en-US",
    "--disable-breakpad",
    # Start-up and scheduling only; none of these changes what a page can see.
    "--disable-extensions",
    "--disable-default-apps",
    "--no-service-autorun",
    "--mute-audio",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-client-side-phishing-detection",
    "--disable-hang-monitor",
)


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


def find_browser(configured: str | None = None) -> str:
    """Return the Chromium executable to launch.

    Order: ``$HARVEST_BROWSER``, then ``configured`` (config ``[browser] path``), then ``PATH``
    (chromium, chromium-browser, google-chrome), then ``/usr/bin/chromium``.

    Raises:
        BrowserError: nothing executable was found.
    """
    explicit = os.environ.get("HARVEST_BROWSER") or configured
    if explicit:
        path = shutil.which(explicit) or explicit
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BrowserError(
                f"browser {explicit!r} is not an executable file; fix $HARVEST_BROWSER or [browser] path"
            )
        return _unwrap(path)
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return _unwrap(found)
    if os.access(_FALLBACK, os.X_OK):
        return _unwrap(_FALLBACK)
    raise BrowserError(
        "no Chromium found: install chromium, or point $HARVEST_BROWSER (or [browser] path) at a Chrome binary"
    )


def _unwrap(path: str) -> str:
    real = _WRAPPED.get(os.path.realpath(path)) or _WRAPPED.get(path)
    if real and os.access(real, os.X_OK):
        return real
    return path


def browser_args(profile_dir: str, *, headful: bool) -> list[str]:
    """The command-line flags for one launch (pure; ``--no-sandbox`` only as root, where Chrome demands it)."""
    args = [*BASE_FLAGS, f"--user-data-dir={profile_dir}"]
    if not headful:
        args.append("--headless=new")
    if _is_root():
        args.append("--no-sandbox")
    if headful:
        args.append("about:blank")
    else:
        # Every harvest opens its own tab in its own context, so the default tab would be a wasted renderer.
        args.append("--no-startup-window")
    return args


def _profile_base() -> str:
    base = tempfile.gettempdir()
    if len(os.path.join(base, PROFILE_PREFIX + "x" * 8)) + len(_SOCKET_SUFFIX) > _SUN_PATH_MAX:
        base = _SHORT_TMP
    return base


def make_profile_dir() -> str:
    """Create the temp profile: under ``tempfile.gettempdir()``, or ``/tmp`` when that is too long a path.

    The profile doubles as Chromium's TMPDIR, so a long ``$TMPDIR`` would push its singleton socket past the
    Unix socket limit and Chromium would abort at start. It records its owner (``OWNER_FILE``: our pid and
    start time), so a later run can tell a profile whose owner was killed (``remove_stale_profiles``).
    """
    path = tempfile.mkdtemp(prefix=PROFILE_PREFIX, dir=_profile_base())
    try:
        # Written under a temp name and renamed: a sweeper never reads a half-written owner.
        temp = os.path.join(path, OWNER_FILE + ".tmp")
        with open(temp, "w", encoding="ascii") as handle:
            handle.write(_owner_token(os.getpid()) or str(os.getpid()))
        os.replace(temp, os.path.join(path, OWNER_FILE))
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def _owner_token(pid: int) -> str | None:
    """``"<pid> <start time>"``: the start time (in clock ticks since boot) tells a reused pid from its first
    owner; None when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError:
        return str(pid)  # no /proc here: the pid alone
    fields = stat[stat.rfind(")") + 2 :].split()
    return f"{pid} {fields[19]}" if len(fields) > 19 else str(pid)


def _owner_alive(recorded: str) -> bool:
    head = recorded.split()
    if not head or not head[0].isdigit():
        return False
    pid = int(head[0])
    if not sys.platform.startswith("linux"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    current = _owner_token(pid)
    if current is None:
        return False
    return len(head) < 2 or current == recorded.strip()


def remove_stale_profiles(bases: tuple[str, ...] | None = None) -> list[str]:
    """Delete the temp profiles whose owning process is gone (it was SIGKILLed before its teardown ran).

    A profile without an owner file is skipped (one being created right now, or another program's). Returns
    the paths removed. Runs before each launch and when the daemon starts.
    """
    removed = []
    for base in dict.fromkeys(bases or (tempfile.gettempdir(), _SHORT_TMP)):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(PROFILE_PREFIX):
                continue
            try:
                with open(os.path.join(entry.path, OWNER_FILE), encoding="ascii") as handle:
                    owner = handle.read()
            except OSError:
                continue
            if not _owner_alive(owner):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


def has_display() -> bool:
    """True where a visible window can open: always off Linux, else when $DISPLAY or $WAYLAND_DISPLAY is set."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _child_setup(nice: int | None = None) -> None:  # pragma: no cover - runs in the forked child
    # Die with the parent even if it is SIGKILLed and never runs its teardown.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if nice is not None:
        # Before exec, so every Chromium process and thread starts there. Chromium sets its threads' niceness by
        # their kind (its IO, compositor and GPU threads to -8, others back to 0), which it may only do with
        # CAP_SYS_NICE (root) or a RLIMIT_NICE above 0: both are taken away, so that it can only go nicer.
        with contextlib.suppress(OSError):
            os.nice(nice)
        with contextlib.suppress(Exception):
            resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_CAPBSET_DROP, _CAP_SYS_NICE, 0, 0, 0)


def _become_subreaper() -> None:
    # Chromium's helpers (zygote, renderers) are its children, not ours. When we kill the group they are
    # re-parented to PID 1, which in containers may never reap them. As a subreaper they come to us instead,
    # and `_reap_group` and the reaper thread (`_reaper.REAPER`) collect them.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


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
        """Start Chromium now, without an event loop (the ``harvest`` command does this before its imports, so
        the browser starts while Python loads); :meth:`start` then adopts it and waits for its endpoint.

        Raises:
            BrowserError: the executable is missing, or no profile can be made.
        """
        if self._proc is not None or self._popen is not None:
            raise RuntimeError("BrowserProcess started twice")
        self._prepare()
        assert self.profile_dir is not None
        try:
            self._popen = subprocess.Popen(
                [self.executable, *browser_args(self.profile_dir, headful=self.headful)], **self._spawn_options()
            )
        except OSError as exc:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            self.profile_dir = None
            raise BrowserError(f"cannot start {self.executable}: {exc.strerror or exc}") from exc
        REAPER.started(self._popen.pid)

    def _prepare(self) -> None:
        if self.headful and not has_display():
            # Chromium would only say "The platform failed to initialize" and exit.
            raise BrowserError(
                "--headful opens a browser window, but there is no display ($DISPLAY and $WAYLAND_DISPLAY are "
                "unset); run harvest in a desktop session (or over `ssh -X`)"
            )
        try:
            self.profile_dir = make_profile_dir()
        except OSError as exc:
            raise BrowserError(f"cannot create a browser profile: {exc}") from exc
        _become_subreaper()

    def _spawn_options(self) -> dict[str, Any]:
        assert self.profile_dir is not None
        return {
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.PIPE,
            "start_new_session": True,  # its own process group, so one killpg reaches every helper
            # Chromium's own temp files (singleton sockets) then go with the profile, even after a SIGKILL.
            "env": {**os.environ, "TMPDIR": self.profile_dir},
            "preexec_fn": functools.partial(_child_setup, self.nice) if sys.platform.startswith("linux") else None,
        }

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
            self._prepare()
            assert self.profile_dir is not None
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    self.executable, *browser_args(self.profile_dir, headful=self.headful), **self._spawn_options()
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
