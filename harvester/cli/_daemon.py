"""``harvest daemon`` (keep every session fresh) and ``harvest status`` (what the daemon is doing).

The CLI only forwards flags: the config file is read by ``harvester._config.load_config`` and the daemon's
view of it is ``DaemonSettings.from_config``. ``status`` imports no browser driver and no scheduler.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from cache import AuthCache, CacheError, SessionRecord, parse_time, utcnow
from cache._export import humanize_delta

from . import _exit


def _cache_path(ctx: click.Context) -> str | None:
    path: str | None = (ctx.find_root().obj or {}).get("cache_path")
    return path


def _load_settings(config_path: Path | None) -> Any:
    """Load and check the config; a bad one exits with the message naming the key and the line."""
    from harvester._config import load_config
    from harvester._exceptions import ConfigError
    from harvester.daemon import DaemonSettings
    from harvester.serve import parse_listen

    try:
        settings = DaemonSettings.from_config(load_config(config_path))
        if settings.listen:
            parse_listen(settings.listen)
    except ConfigError as exc:
        click.echo(f"harvest daemon: bad config: {exc}", err=True)
        sys.exit(_exit.USAGE)
    except ValueError as exc:  # a tuning variable, or a value load_config let through that the daemon cannot use
        click.echo(f"harvest daemon: bad setting: {exc}", err=True)
        sys.exit(_exit.USAGE)
    return settings


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config TOML (default: $HARVEST_CONFIG or the platform config path).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log library debug messages too.")
@click.pass_context
def daemon(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """Keep every configured provider's session fresh, until SIGTERM.

    \b
    Refreshes each record ahead of its expiry with one shared browser, backs off on failures,
    reloads the config on SIGHUP and writes a status file beside the cache (`harvest status`).
    Logs go to stderr, one key=value line per event, with every secret redacted.
    """
    from harvester.daemon import Daemon, SecretRegistry, configure_logging

    secrets = SecretRegistry()
    configure_logging(secrets, verbose=verbose)
    settings = _load_settings(config_path)
    try:
        cache = AuthCache.open(path=_cache_path(ctx))
        cache.list()  # fail now, not at the first refresh, on a wrong key or a corrupt file
    except CacheError as exc:
        click.echo(f"harvest daemon: {exc}", err=True)
        sys.exit(_exit.CACHE_ERROR)
    if not settings.providers:
        click.echo("harvest daemon: warning: no [providers.NAME] table in the config; nothing to refresh", err=True)

    def reload() -> Any:
        return _reload_settings(config_path)

    runner = Daemon(settings, cache=cache, reload=reload, secrets=secrets)
    from harvester._exceptions import ConfigError

    try:
        code = asyncio.run(runner.serve())
    except ConfigError as exc:  # [daemon] listen serves `harvest serve`'s app: off loopback it needs a token
        click.echo(f"harvest daemon: {exc}", err=True)
        sys.exit(_exit.USAGE)
    except OSError as exc:  # the status server's address is taken or not ours to bind
        if not settings.listen:
            raise
        click.echo(f"harvest daemon: cannot listen on {settings.listen}: {exc.strerror or exc}", err=True)
        sys.exit(_exit.USAGE)
    sys.exit(code)


def _reload_settings(config_path: Path | None) -> Any:
    # On SIGHUP a bad config raises (and the daemon keeps the old one) instead of exiting.
    from harvester._config import load_config
    from harvester.daemon import DaemonSettings

    return DaemonSettings.from_config(load_config(config_path, required=True))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show, per provider: last success, last failure and its error, next run, record expiry."""
    from cache import default_cache_path
    from harvester.daemon._status import StatusFileError, add_cluster, build_report, read_status, status_path

    records: dict[str, SessionRecord] | None = None
    cache_error: str | None = None
    given = _cache_path(ctx)
    # Where the daemon writes its status file (beside the cache file; a local directory for a Redis cache), even
    # when the cache cannot be opened (a malformed key).
    cache_file = default_cache_path() if not given else Path(given).expanduser() if "://" not in given else None
    heartbeats = None
    try:
        cache = AuthCache.open(given)
        cache_file = cache.path
        records = {record.provider: record for record in cache.list()}
        beats = getattr(cache.storage, "heartbeats", None)  # live daemons on a shared (Redis) cache
        heartbeats = beats() if beats is not None else None
    except CacheError as exc:  # a wrong key, a corrupt file: the status file still says what the daemon did
        cache_error = str(exc)
    if cache_file is None:
        click.echo(f"harvest status: error: {cache_error}", err=True)
        sys.exit(_exit.CACHE_ERROR)
    try:
        report = add_cluster(build_report(read_status(status_path(cache_file)), records), heartbeats)
    except StatusFileError as exc:
        click.echo(f"harvest status: error: {exc}", err=True)
        sys.exit(_exit.CACHE_ERROR)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(report)
    if cache_error is not None:
        click.echo(f"warning: record expiry is from the daemon's status file: {cache_error}", err=True)
        sys.exit(_exit.CACHE_ERROR)


def _ago(value: str | None, now: datetime, *, future: bool = False) -> str:
    when = parse_time(value, "time") if value else None
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    if future:
        return "now" if seconds <= 0 else f"in {humanize_delta(seconds)}"
    return f"{humanize_delta(-seconds)} ago" if seconds <= 0 else "just now"


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    now = utcnow()
    info = report["daemon"]
    title = f"daemon running (pid {info['pid']})" if info["running"] else "daemon not running"
    table = Table(title=title)
    for column in ("provider", "record", "expires", "last success", "last failure", "error", "next run"):
        table.add_column(column)
    for row in report["providers"]:
        expires = _ago(row["record_expires_at"], now, future=True) if row["record_expires_at"] else "-"
        if expires == "now":
            expires = "expired"
        table.add_row(
            row["provider"],
            row["record"],
            expires,
            _ago(row["last_success"], now),
            _ago(row["last_failure"], now),
            row["last_error"] or "",
            "running" if row["running"] else _ago(row["next_run"], now, future=True),
        )
    Console().print(table)
    for beat in report.get("daemons") or ():
        refreshed = ", ".join(
            f"{name} {_ago(entry.get('last_success'), now)}" for name, entry in (beat.get("providers") or {}).items()
        )
        click.echo(f"daemon {beat.get('node')} pid {beat.get('pid')} v{beat.get('version')}: {refreshed or '-'}")
