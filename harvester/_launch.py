"""Start Chromium without an event loop: which binary, its flags, its temp profile, the fork.

Kept apart from ``_browser.BrowserProcess`` (which waits for the browser over asyncio and tears it down) and
free of asyncio, because the ``harvest`` command calls :func:`spawn` first thing, before its imports: every
module imported before the fork is time the browser is not yet starting.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

from ._exceptions import BrowserError
from ._reaper import REAPER

# typing.TYPE_CHECKING without importing typing (5 ms of this module's import, before the fork)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._browser import BrowserProcess

PROFILE_PREFIX = "harvest-profile-"
OWNER_FILE = "harvest-owner"  # in each profile: "<pid> <start time>" of the process that made it
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FALLBACK = "/usr/bin/chromium"
# Distribution wrappers (Debian's /usr/bin/chromium is a shell script) -> the binary they exec. Calling the
# binary directly skips a shell, `findmnt` and the wrapper's extension flags, which we do not want anyway.
_WRAPPED = {
    "/usr/bin/chromium": "/usr/lib/chromium/chromium",
    "/usr/bin/chromium-browser": "/usr/lib/chromium-browser/chromium-browser",
    "/usr/bin/chromium-headless-shell": "/usr/lib/chromium/chromium-headless-shell",
}
# Chromium puts its singleton socket at $TMPDIR/.org.chromium.Chromium.XXXXXX/SingletonSocket and aborts at start
# when that path does not fit a Unix socket address (108 bytes with the NUL); TMPDIR is the profile itself.
_SOCKET_SUFFIX = "/.org.chromium.Chromium.XXXXXX/SingletonSocket"
_SUN_PATH_MAX = 107
_SHORT_TMP = "/tmp"
# A RAM-backed directory for the profile when $TMPDIR names no other place. Chromium writes and syncs ~100
# files there (databases of the profile it never uses for a harvest) and we delete them all at the end: on a
# disk that costs the launch ~50 ms and the teardown ~50 ms more than on tmpfs (measured, ext4).
_RAM_TMP = "/dev/shm"
_RAM_TMP_MIN_FREE = 256 * 1024 * 1024  # a container's default /dev/shm (64 MB) is too small to share
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_CAPBSET_DROP = 24
_CAP_SYS_NICE = 23

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


def is_headless_shell(executable: str) -> bool:
    """True for Chromium's headless shell (Debian's ``chromium-headless-shell``, Chrome for Testing's
    ``chrome-headless-shell``): the old headless mode as a browser of its own, without Chrome's user interface.

    It starts in about half the time and opens a tab in a third (no window, no per-profile services), but a page
    can tell it from a desktop Chrome (no ``window.chrome``, no plugins, notifications denied), so it is used
    only when the user names it (``[browser] path``, ``$HARVEST_BROWSER``), never picked by itself.
    """
    name = os.path.basename(executable)
    return "headless-shell" in name or "headless_shell" in name


#: Where a headless shell is looked for by :func:`find_headless_shell` (``PATH`` names, then Debian's binary).
_SHELL_CANDIDATES = ("chromium-headless-shell", "chrome-headless-shell", "/usr/lib/chromium/chromium-headless-shell")


def find_headless_shell() -> str | None:
    """An installed headless shell (:func:`is_headless_shell`), or None: for the tests and benchmarks that compare
    it with Chromium. harvest itself launches one only when the user names it."""
    for candidate in _SHELL_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return _unwrap(found)
    return None


def browser_args(profile_dir: str, *, headful: bool, shell: bool = False) -> list[str]:
    """The command-line flags for one launch (pure; ``--no-sandbox`` only as root, where Chrome demands it).

    ``shell``: the browser is a headless shell (:func:`is_headless_shell`), which has one headless mode only.
    """
    args = [*BASE_FLAGS, f"--user-data-dir={profile_dir}"]
    if not headful and not shell:
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
    if not os.environ.get("TMPDIR") and _roomy(_RAM_TMP):
        return _RAM_TMP
    base = tempfile.gettempdir()
    if len(os.path.join(base, PROFILE_PREFIX + "x" * 8)) + len(_SOCKET_SUFFIX) > _SUN_PATH_MAX:
        base = _SHORT_TMP
    return base


def _roomy(path: str) -> bool:
    """True for a writable directory with ``_RAM_TMP_MIN_FREE`` bytes free."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK) and stat.f_bavail * stat.f_frsize >= _RAM_TMP_MIN_FREE


def make_profile_dir() -> str:
    """Create the temp profile: in ``/dev/shm`` (RAM) when ``$TMPDIR`` is unset and it has room, else under
    ``tempfile.gettempdir()``, or ``/tmp`` when that is too long a path.

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
    for base in dict.fromkeys(bases or (tempfile.gettempdir(), _SHORT_TMP, _RAM_TMP)):
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


class Launch:
    """A Chromium forked by :func:`spawn`, not yet waited for: ``BrowserProcess.adopt`` takes it over.

    ``owner`` is the ``BrowserProcess`` that adopted it (None until then); it stops the browser and removes
    ``profile_dir``.
    """

    def __init__(self, executable: str, headful: bool, profile_dir: str, popen: subprocess.Popen[bytes]) -> None:
        self.executable = executable
        self.headful = headful
        self.profile_dir = profile_dir
        self.popen = popen
        self.owner: BrowserProcess | None = None

    def kill_now(self, timeout: float = 5.0) -> None:
        """Kill the browser's whole process group, wait for it (``timeout`` at most) and remove the profile: the
        synchronous teardown for a process about to ``os._exit`` (a Ctrl-C while the command still loads)."""
        with contextlib.suppress(OSError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        shutil.rmtree(self.profile_dir, ignore_errors=True)


def prepare_profile(headful: bool, executable: str = "") -> str:
    """Check that a visible browser can open, make the temp profile and become the helpers' subreaper.

    Raises:
        BrowserError: ``headful`` with a headless shell or without a display, or no profile can be made.
    """
    if headful and is_headless_shell(executable):
        raise BrowserError(
            f"--headful opens a browser window, but {executable} is Chromium's headless shell, which has none; "
            "point [browser] path (or $HARVEST_BROWSER) at a full Chromium for --headful"
        )
    if headful and not has_display():
        # Chromium would only say "The platform failed to initialize" and exit.
        raise BrowserError(
            "--headful opens a browser window, but there is no display ($DISPLAY and $WAYLAND_DISPLAY are "
            "unset); run harvest in a desktop session (or over `ssh -X`)"
        )
    try:
        profile_dir = make_profile_dir()
    except OSError as exc:
        raise BrowserError(f"cannot create a browser profile: {exc}") from exc
    _become_subreaper()
    return profile_dir


def spawn_options(profile_dir: str, nice: int | None) -> dict[str, Any]:
    """The ``Popen`` keyword arguments for one launch (stdout ignored, stderr piped for the endpoint)."""
    return {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.PIPE,
        "start_new_session": True,  # its own process group, so one killpg reaches every helper
        # Chromium's own temp files (singleton sockets) then go with the profile, even after a SIGKILL.
        "env": {**os.environ, "TMPDIR": profile_dir},
        "preexec_fn": functools.partial(_child_setup, nice) if sys.platform.startswith("linux") else None,
    }


def spawn(executable: str, *, headful: bool = False, nice: int | None = None) -> Launch:
    """Fork Chromium now, with no event loop (``BrowserProcess.adopt`` later waits for its endpoint).

    Raises:
        BrowserError: no display for ``headful``, no profile, or the executable cannot be started.
    """
    profile_dir = prepare_profile(headful, executable)
    args = browser_args(profile_dir, headful=headful, shell=is_headless_shell(executable))
    try:
        popen = subprocess.Popen([executable, *args], **spawn_options(profile_dir, nice))
    except OSError as exc:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise BrowserError(f"cannot start {executable}: {exc.strerror or exc}") from exc
    # From now on its helpers that end up ours are reaped as they exit.
    REAPER.started(popen.pid)
    return Launch(executable, headful, profile_dir, popen)
