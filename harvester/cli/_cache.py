"""``harvest cache …``: read, export and maintain the encrypted cache.

This module imports only the cache, click and orjson: ``harvest cache get`` is on other tools' hot path.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson

from cache import AuthCache, CacheError, SessionRecord, format_time, generate_key, normalize_name, utcnow
from cache._export import FORMATS, ExportError, expires_in

from . import _exit

F = TypeVar("F", bound=Callable[..., Any])


def _cache_errors(fn: F) -> F:
    """Turn a ``CacheError`` into its message on stderr and exit code 3."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CacheError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(_exit.CACHE_ERROR)

    return wrapper  # type: ignore[return-value]


def _usage_error(message: str) -> NoReturn:
    """Bad input: one line on stderr and exit 2 (click's UsageError would add three lines of usage)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(_exit.USAGE)


def _open(ctx: click.Context) -> AuthCache:
    path = (ctx.find_root().obj or {}).get("cache_path")
    return AuthCache.open(path)


@click.group()
def cache() -> None:
    """Read, export and maintain the encrypted session cache."""


@cache.command()
def keygen() -> None:
    """Print a new random key (URL-safe base64 of 32 bytes) for HARVEST_CACHE_KEY."""
    click.echo(generate_key())


@cache.command()
@click.pass_context
@_cache_errors
def path(ctx: click.Context) -> None:
    """Print the cache file's path (or its URL, without the password)."""
    click.echo(_open(ctx).location)


def _summary(record: SessionRecord) -> dict[str, Any]:
    """What `list` shows: no cookie values, no key, no header values."""
    return {
        "provider": record.provider,
        "harvested_at": format_time(record.harvested_at),
        "expires_at": format_time(record.expires_at),
        "expired": record.is_expired,
        "has_api_key": bool(record.api_key),
        "cookies": len(record.cookies),
        "cookie_names": [c.name for c in record.cookies],
        "origin": record.origin,
        "browser": record.browser,
    }


@cache.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@_cache_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the cached sessions (no secrets)."""
    records = _open(ctx).list()
    if as_json:
        click.echo(orjson.dumps([_summary(r) for r in records], option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console
    from rich.table import Table

    now = utcnow()
    table = Table(title=f"{len(records)} cached session(s)")
    for column in ("provider", "harvested", "expires in", "API key", "cookies"):
        table.add_column(column)
    for r in records:
        harvested = r.harvested_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(r.provider, harvested, expires_in(r, now), "yes" if r.api_key else "no", str(len(r.cookies)))
    Console().print(table)


@cache.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Export format.")
@click.option("--fresh", is_flag=True, help="Exit 1 if the record has expired.")
@click.pass_context
@_cache_errors
def get(ctx: click.Context, name: str, as_json: bool, fmt: str | None, fresh: bool) -> None:
    """Print one record, in a shape other tools read.

    \b
    json           the record (the shape `put` reads)
    cookies.txt    Netscape cookies for curl -b, wget --load-cookies, yt-dlp --cookies
    env            export lines for eval
    curl           a curl config: curl -K <(harvest cache get NAME --format curl) URL
    header         a Cookie: line
    storage-state  Playwright's storage_state JSON
    cookies.json   the EditThisCookie / Cookie-Editor cookie list
    har            a HAR 1.2 log with one request carrying the session
    """
    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json and --format are exclusive")
    from harvester._entry import cache_get

    sys.exit(cache_get((ctx.find_root().obj or {}).get("cache_path"), name, fmt or "json", fresh))


@cache.command()
@click.argument("source", type=click.File("rb"))
@click.pass_context
@_cache_errors
def put(ctx: click.Context, source: Any) -> None:
    """Import one record from a JSON file (or - for stdin), in the shape `get --json` prints."""
    label = getattr(source, "name", "-")
    try:
        record = SessionRecord.from_json(orjson.loads(source.read()))
    except orjson.JSONDecodeError as exc:
        _usage_error(f"{label}: not valid JSON ({exc})")
    except ValueError as exc:  # RecordError names the field and the rule
        _usage_error(f"{label}: {exc}")
    _open(ctx).put(record)
    click.echo(f"stored {record.provider} ({len(record.cookies)} cookies)", err=True)


@cache.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Export format (see `get --help`).")
@click.pass_context
@_cache_errors
def export(ctx: click.Context, directory: Path, names: tuple[str, ...], fmt: str) -> None:
    """Write each record (or the NAMEs) to DIRECTORY/<name>.<ext>, mode 0600, atomically; print the paths.

    DIRECTORY is created 0700; one that other users can write to is refused.
    """
    from cache._export_files import export_records, prepare_directory

    try:
        prepare_directory(directory)
    except ExportError as exc:
        raise click.UsageError(str(exc)) from None
    c = _open(ctx)
    if names:
        records = []
        for given in names:
            try:
                name = normalize_name(given)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            record = c.get(name)
            if record is None:
                click.echo(f"error: no cached session for {name!r}; run `harvest --provider {name}`", err=True)
                sys.exit(_exit.NOT_FOUND)
            records.append(record)
    else:
        records = c.list()
    now = utcnow()
    for record in records:
        if record.is_expired:
            click.echo(f"warning: the {record.provider} session {expires_in(record, now)}", err=True)
    try:
        paths = export_records(records, directory, fmt)
    except ValueError as exc:  # ExportError, RecordError: a record stored before today's rules; nothing written
        click.echo(f"error: cannot export: {exc}", err=True)
        sys.exit(_exit.USAGE)
    for written in paths:
        click.echo(str(written))
    click.echo(f"exported {len(paths)} session(s) as {fmt} to {directory}", err=True)


@cache.command()
@click.argument("name")
@click.pass_context
@_cache_errors
def delete(ctx: click.Context, name: str) -> None:
    """Delete one record."""
    try:
        name = normalize_name(name)
    except ValueError as exc:
        _usage_error(str(exc))
    if not _open(ctx).delete(name):
        click.echo(f"error: no cached session for {name!r}", err=True)
        sys.exit(_exit.NOT_FOUND)
    click.echo(f"deleted {name}", err=True)


@cache.command("rotate-key")
@click.pass_context
@_cache_errors
def rotate_key(ctx: click.Context) -> None:
    """Re-encrypt the whole cache under a new key, atomically, and print where the key went."""
    c = _open(ctx)
    new_passphrase = None
    if c.key_origin == "$HARVEST_CACHE_PASSPHRASE":
        new_passphrase = click.prompt("New passphrase", hide_input=True, confirmation_prompt=True)
    where = c.rotate_key(new_passphrase=new_passphrase)
    click.echo(f"re-encrypted {c.location}; the new key is in {where}")


@cache.command()
@click.pass_context
@_cache_errors
def reset(ctx: click.Context) -> None:
    """Move a bad (or any) cache file aside as <name>.bad-<UTC timestamp> and start empty."""
    c = _open(ctx)
    moved = c.reset()
    if moved is None:
        click.echo(f"no cache at {c.location}; nothing to reset")
    else:
        click.echo(f"moved {c.location} aside to {moved}; the cache is now empty")
