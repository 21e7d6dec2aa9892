"""The ``harvest`` console script.

``harvest cache get NAME`` is what other tools run on every request, so it is dispatched here without click
(which alone costs about a quarter of that command's start-up). Every other command line, including
``--help`` and any flag this parser does not know, goes to the click application unchanged.

This is also the one place that turns what escapes a command into an exit code: Ctrl-C exits 130 quietly
(also during the imports, before any command runs), a ``CacheError`` exits 3 with one line, and anything
else is a bug in harvest: exit 70 with the traceback.
"""

from __future__ import annotations

# The C half of ``signal``: ``signal`` itself loads ``enum``, a tenth of the import time before ``main`` runs.
import _signal as signal
import os
import sys

# Keep the module's own imports to the standard library: they run before ``main`` can catch a Ctrl-C.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (as in harvester/__init__.py)
if TYPE_CHECKING:
    from harvester._launch import Launch
_INTERRUPTED = 130


def cache_get(path: str | None, name: str, fmt: str, fresh: bool) -> int:
    """Print one cached record in ``fmt``; return the exit code (shared by the click command)."""
    from cache import AuthCache, CacheError, normalize_name, utcnow
    from cache._export import expires_in, render
    from harvester.cli import _exit

    try:
        name = normalize_name(name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit.USAGE
    if path is None and not os.environ.get("HARVEST_CACHE"):
        from harvester._config import cache_location  # only without $HARVEST_CACHE: the config may name the cache

        path = cache_location(None)
    try:
        record = AuthCache.open(path).get(name)
    except CacheError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit.CACHE_ERROR
    if record is None:
        print(f"error: no cached session for {name!r}; run `harvest --provider {name}`", file=sys.stderr)
        return _exit.NOT_FOUND
    if record.is_expired:
        print(
            f"warning: the {name} session {expires_in(record, utcnow())}; run `harvest --provider {name}`",
            file=sys.stderr,
        )
        if fresh:
            return _exit.NOT_FOUND
    try:
        text = render(record, fmt)
    except ValueError as exc:  # a record stored before today's rules, e.g. a cookie value holding a newline
        print(f"error: the cached {name} record cannot be exported: {exc}", file=sys.stderr)
        return _exit.USAGE
    sys.stdout.write(text)
    return _exit.OK


def _parse_cache_get(args: list[str]) -> tuple[str, str, bool] | None:
    """Parse exactly ``cache get NAME [--json] [--format F] [--fresh]``; None means "let click handle it"."""
    if len(args) < 3 or args[0] != "cache" or args[1] != "get":
        return None
    name: str | None = None
    fmt: str | None = None
    as_json = fresh = False
    rest = iter(args[2:])
    for arg in rest:
        if arg == "--json":
            as_json = True
        elif arg == "--fresh":
            fresh = True
        elif arg == "--format" or arg.startswith("--format="):
            from cache._export import FORMATS

            fmt = arg.partition("=")[2] if "=" in arg else next(rest, None)
            if fmt not in FORMATS:
                return None
        elif arg.startswith("-") or name is not None:
            return None
        else:
            name = arg
    if name is None or (as_json and fmt not in (None, "json")):
        return None
    return name, fmt or "json", fresh


# The root group's options that take a value (the next argument, unless written as --option=value).
_VALUE_OPTIONS = frozenset(
    {"--provider", "--url", "--name", "--backend", "--proxy", "--timeout", "--base-url", "--cache"}
)
_HARVEST_OPTIONS = frozenset({"--provider", "--all", "--url"})
# A visible browser has its own checks (a display) and a help or version line needs none.
_NO_BROWSER_OPTIONS = frozenset({"--headful", "--help", "-h", "--version"})


def _is_oneshot_harvest(args: list[str]) -> bool:
    """``harvest --provider NAME`` (``--all``, ``--url``): the root command harvesting, not a subcommand."""
    harvesting = False
    value_next = False
    for arg in args:
        if value_next:
            value_next = False
            continue
        option = arg.partition("=")[0]
        if option in _NO_BROWSER_OPTIONS:
            return False
        harvesting = harvesting or option in _HARVEST_OPTIONS
        if arg in _VALUE_OPTIONS:
            value_next = True
        elif not arg.startswith("-"):
            return False  # a subcommand (cache, daemon, chat ...)
    return harvesting


def _launch_early() -> Launch | None:
    """Start Chromium before the imports of a command line that harvests (``_launch.spawn``): it starts while
    Python loads asyncio, click, the cache and the driver, and the harvester adopts it. None when it cannot
    start (the launch proper then says why).

    ``_launch`` imports no asyncio (a tenth of a second here): the fork comes before that, not after.
    """
    from harvester._launch import find_browser, spawn

    try:
        return spawn(find_browser(_configured_browser()))
    except Exception:
        return None


def _configured_browser() -> str | None:
    """The config's ``[browser] path``, read before the imports so that the early Chromium is the one the
    harvest launches (else the harvester stops it and starts the configured one). None when it names none or
    cannot be read cheaply here: the harvester then reads the config (and reports what is wrong with it).

    The file is located as ``_config.default_config_path`` does, without importing platformdirs (Linux only),
    and parsed only when it mentions a browser.
    """
    if os.environ.get("HARVEST_BROWSER"):
        return None  # find_browser prefers it to the config anyway
    path = os.environ.get("HARVEST_CONFIG")
    if path:
        path = os.path.expanduser(path)
    elif sys.platform.startswith("linux"):
        base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        path = os.path.join(base, "harvest", "config.toml")
    else:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError:
        return None
    if b"browser" not in data:
        return None
    import tomllib

    try:
        value = tomllib.loads(data.decode("utf-8")).get("browser", {}).get("path")
    except (ValueError, AttributeError):  # bad TOML or UTF-8, or `browser` not a table
        return None
    return value if isinstance(value, str) and value else None


def _stop_early(launch: Launch | None) -> None:
    """Stop the early Chromium unless the harvester already did (a usage error, say, came first)."""
    if launch is None:
        return
    from harvester._browser import BrowserProcess

    process = launch.owner or BrowserProcess.adopt(launch)
    if process.profile_dir is not None:
        import asyncio

        asyncio.run(process.stop())


def _interrupted_while_loading(signum: int, frame: object) -> None:
    # Only imports have run (nothing written, no lock), so there is nothing to clean up but the early browser,
    # and exiting here spares the user a KeyboardInterrupt traceback out of whichever module was loading.
    if _early is not None:
        _early.kill_now()
    os._exit(_INTERRUPTED)


_early: Launch | None = None  # the Chromium main() forked before the imports, for the handler above


def command_starts() -> None:
    """Called as a command starts (for click, once it has parsed the command line): from here on a command may
    hold a lock or run a browser, so Ctrl-C unwinds it (KeyboardInterrupt, which asyncio.run turns into
    cancelling the work) before we exit. Until then the quiet exit above stands: click itself would turn a
    Ctrl-C while it parses into "Aborted!" and exit 1. Does nothing where the caller chose how to handle SIGINT
    (a shell ignoring it for a background job) or when the command was not started by ``main``.
    """
    if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Entry point of the ``harvest`` command."""
    # A shell that starts us in the background sets SIGINT to "ignore"; that choice is the caller's to keep.
    handles_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if handles_sigint:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    fast = _parse_cache_get(sys.argv[1:])
    oneshot = fast is None and _is_oneshot_harvest(sys.argv[1:])
    global _early
    early = _early = _launch_early() if oneshot else None
    code: object = 0
    try:
        _main(fast, early)
    except SystemExit as exc:
        if not oneshot:
            raise
        code = exc.code
    finally:
        _stop_early(early)
    if oneshot:
        # Every browser is stopped and reaped, its profile removed and each record saved: what is left is the
        # interpreter's own teardown (freeing every object and ~300 modules, ~80 ms of the user's wait).
        exit_now(code)


def exit_now(code: object) -> None:
    """Flush stdout and stderr, then end the process at once with ``code`` (as ``sys.exit`` reads it), skipping
    the interpreter's teardown: only once nothing is left to clean up (no child, no temp file, no lock).

    A stdout that cannot be flushed (a closed pipe) exits 120 with no traceback, as Python's own exit does.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream, failed in ((sys.stdout, 120), (sys.stderr, None)):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            if failed is not None and status == 0:
                status = failed
    os._exit(status & 0xFF)


def _main(fast: tuple[str, str, bool] | None, early: Launch | None) -> None:
    from harvester.cli import _exit

    if fast is None:
        from harvester.cli._app import main as app
    from cache import CacheError

    try:
        if fast is not None:
            command_starts()
            sys.exit(cache_get(None, *fast))
        launched = None
        if early is not None:
            from harvester._browser import BrowserProcess

            launched = BrowserProcess.adopt(early)
        app(prog_name="harvest", obj={"launched": launched})
    except (KeyboardInterrupt, _exit.Interrupted):
        code = _exit.INTERRUPTED
    except CacheError as exc:  # every verb handles its own; this is the net under them
        print(f"harvest: error: {exc}", file=sys.stderr)
        code = _exit.CACHE_ERROR
    except Exception as exc:
        # Imported only now: the module costs ~4 ms, which `harvest cache get` (on every request of other tools)
        # should not pay to name an error it never raises.
        from harvester._exceptions import UnsupportedDependency

        if isinstance(exc, UnsupportedDependency):  # an install problem: a library of a version we do not support
            print(f"harvest: error: {exc}", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(_exit.USAGE)
        import traceback

        traceback.print_exc()
        print(f"harvest: internal error in harvest: {exc!r} (please report this)", file=sys.stderr)
        code = _exit.INTERNAL_ERROR
    sys.stderr.flush()
    sys.exit(code)
