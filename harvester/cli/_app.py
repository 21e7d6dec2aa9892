"""The ``harvest`` click application.

Subcommands are imported only when they run, so ``harvest cache get`` never pays for a browser driver or an
HTTP library: the whole point of the cache is that other tools can read it on every request.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from harvester._entry import command_starts

from . import _exit

# name -> "module:attribute"; imported on first use.
_SUBCOMMANDS = {
    "cache": "harvester.cli._cache:cache",
    "chat": "harvester.cli._chat:chat",
    "models": "harvester.cli._chat:models",
    "image": "harvester.cli._chat:image",
    "daemon": "harvester.cli._daemon:daemon",
    "serve": "harvester.cli._serve:serve",
    "status": "harvester.cli._daemon:status",
}


class _LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # click turns Ctrl-C into "Aborted!" and exit 1; ours is exit 130, quietly (``harvester._entry``).
        command_starts()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _exit.Interrupted from None
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # a prompt interrupted
                raise _exit.Interrupted from None
            raise


@click.group(cls=_LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--provider", "providers", multiple=True, metavar="NAME", help="Harvest this provider's session.")
@click.option("--all", "all_providers", is_flag=True, help="Harvest every known provider.")
@click.option("--url", help="Harvest any site's cookies and user agent.")
@click.option("--name", help="Record name for --url (default: the URL's host).")
@click.option("--backend", type=click.Choice(["nodriver", "playwright"]), default=None, help="Browser driver.")
@click.option("--headful", is_flag=True, help="Open a visible browser, for a login or an interactive challenge.")
@click.option("--proxy", metavar="URL", help="Proxy for the browser, recorded for the clients.")
@click.option(
    "--timeout", type=float, default=None, help="Deadline in seconds for each wait [default: 30; 300 with --headful]."
)
@click.option("--base-url", metavar="ORIGIN", help="Rebase every endpoint of the provider onto ORIGIN.")
@click.option(
    "--cache",
    "cache_path",
    metavar="PATH|URL",
    help="Cache file or redis:// URL (default: $HARVEST_CACHE, [cache] url, or the user data dir).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log each step to stderr.")
@click.version_option(package_name="harvest")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Keep browser sessions for AI providers alive, and reuse them.

    \b
    harvest --provider cerebras      harvest one provider into the encrypted cache
    harvest --all                    harvest every provider
    harvest cache list               what the cache holds (no secrets)
    harvest chat --provider NAME     stream an answer through the cached session
    harvest daemon                   keep every session fresh
    harvest serve                    FlareSolverr /v1 and an OpenAI gateway over the cache
    """
    ctx.ensure_object(dict)
    from .._config import cache_location

    options["cache_path"] = ctx.obj["cache_path"] = cache_location(options["cache_path"])
    if ctx.invoked_subcommand is not None:
        return
    if not (options["providers"] or options["all_providers"] or options["url"] is not None):
        click.echo(ctx.get_help())
        return
    from ._oneshot import run

    ctx.exit(run(launched=ctx.obj.get("launched"), **options))
