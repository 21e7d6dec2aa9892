"""The ``harvest`` console script.

``harvest cache get NAME`` is what other tools run on every request, so it is dispatched here without click
(which alone costs about a quarter of that command's start-up). Every other command line, including
``--help`` and any flag this parser does not know, goes to the click application unchanged.
"""

from __future__ import annotations

import sys

from harvester.cli import _exit

_EXPORT_FORMATS = ("json", "cookies.txt", "env", "curl", "header")


def cache_get(path: str | None, name: str, fmt: str, fresh: bool) -> int:
    """Print one cached record in ``fmt``; return the exit code (shared by the click command)."""
    from cache import AuthCache, CacheError, utcnow
    from cache._export import expires_in, render

    try:
        record = AuthCache.open(path=path).get(name)
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
    sys.stdout.write(render(record, fmt))
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
            fmt = arg.partition("=")[2] if "=" in arg else next(rest, None)
            if fmt not in _EXPORT_FORMATS:
                return None
        elif arg.startswith("-") or name is not None:
            return None
        else:
            name = arg
    if name is None or (as_json and fmt not in (None, "json")):
        return None
    return name, fmt or "json", fresh


def main() -> None:
    """Entry point of the ``harvest`` command."""
    fast = _parse_cache_get(sys.argv[1:])
    if fast is not None:
        sys.exit(cache_get(None, *fast))
    from harvester.cli import main as app

    app()
