"""``harvest serve``: the cached sessions over HTTP (FlareSolverr's ``/v1``, an OpenAI gateway, ``/v1/sessions``).

The command only forwards flags: ``ServeSettings.resolve`` reads the token from ``$HARVEST_SERVER_TOKEN``, the
config or the token file, and refuses a non-loopback address without one unless ``--no-auth``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from . import _exit


@click.command()
@click.option("--listen", metavar="HOST:PORT", default=None, help="Address to serve [default: 127.0.0.1:8191].")
@click.option("--token", default=None, metavar="TOKEN", help="Bearer token clients must send ($HARVEST_SERVER_TOKEN).")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback address without a token (anyone can use it).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config TOML (default: $HARVEST_CONFIG or the platform config path).",
)
@click.option(
    "--cache", "cache_path", metavar="PATH_OR_URL", default=None, help="Cache file (default: $HARVEST_CACHE)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log library debug messages too.")
@click.pass_context
def serve(
    ctx: click.Context,
    listen: str | None,
    token: str | None,
    no_auth: bool,
    config_path: Path | None,
    cache_path: str | None,
    verbose: bool,
) -> None:
    """Serve the cached sessions over HTTP until SIGTERM.

    \b
    POST /v1                     FlareSolverr-compatible (request.get, request.post, sessions.*)
    GET  /v1/models              OpenAI-compatible gateway over the provider clients
    POST /v1/chat/completions
    POST /v1/images/generations
    GET  /v1/sessions[/NAME]     the cache's records (token required)
    GET  /metrics                Prometheus metrics
    """
    from cache import AuthCache, CacheError
    from harvester._config import load_config
    from harvester._exceptions import ConfigError
    from harvester.daemon import SecretRegistry, configure_logging
    from harvester.daemon._logging import LOGGER_NAME, log_event
    from harvester.serve import ServeApp, ServeSettings, ServeState  # (UnsupportedDependency: main says it)

    secrets = SecretRegistry()
    configure_logging(secrets, verbose=verbose)
    try:
        config = load_config(config_path)
        settings = ServeSettings.resolve(config, listen=listen, token=token, no_auth=no_auth)
    except ConfigError as exc:
        click.echo(f"harvest serve: {exc}", err=True)
        sys.exit(_exit.USAGE)
    secrets.set("server-token", [settings.token])
    path = cache_path or (ctx.find_root().obj or {}).get("cache_path")
    cache = AuthCache.open(path)  # a file path, or a redis:// URL shared by several hosts
    try:
        cache.list()  # fail now, not at the first request, on a wrong key or a corrupt file
    except CacheError as exc:
        click.echo(f"harvest serve: {exc}", err=True)
        sys.exit(_exit.CACHE_ERROR)
    proxies: set[str] = set()

    def on_secret(proxy: str) -> None:
        # A proxy password from a request: redact it from every log line from now on.
        password = unquote(urlsplit(proxy).password or "")
        if password and password not in proxies and len(proxies) < 1024:
            proxies.add(password)
            secrets.set("request-proxies", proxies)

    import logging

    logger = logging.getLogger(LOGGER_NAME)

    async def main() -> None:
        state = ServeState(settings, cache=cache, config=config, on_secret=on_secret)
        server = ServeApp(state)
        await server.start()
        if not settings.token and not settings.loopback:
            log_event(logger, logging.WARNING, "serve.no_auth", listen=f"{server.host}:{server.port}")
        log_event(logger, logging.INFO, "serve.started", url=server.url, auth="token" if settings.token else "none")
        click.echo(f"harvest serve: listening on {server.url}", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The handler only sets a flag; the shutdown runs here, in order.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
            log_event(logger, logging.INFO, "serve.stopping", inflight=state.requests.in_flight)
        finally:
            await server.stop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log_event(logger, logging.INFO, "serve.stopped")

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except OSError as exc:
        click.echo(f"harvest serve: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", err=True)
        sys.exit(_exit.USAGE)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, as uvicorn picks it; else asyncio's own (None).

    The loop is most of what a small request costs beyond its handler (a streamed completion wakes the loop
    about five times: the request, the handler's task, the provider's answer, the reply, the next request),
    and uvloop runs it, its socket transports and its timers in C.
    """
    try:
        import uvloop
    except ImportError:  # not installed (Windows, or a trimmed install): asyncio's loop serves the same
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]
