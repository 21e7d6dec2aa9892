"""``harvest chat``, ``harvest models`` and ``harvest image``: the provider clients on the command line.

The commands only forward flags to a ``providers.Client``; the work is in ``providers``. Every ``ProviderError`` becomes exit code
``PROVIDER_ERROR`` with its message (a ``MissingAuthError`` names the harvest command to run).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from harvester.cli._exit import CACHE_ERROR, PROVIDER_ERROR, USAGE

if TYPE_CHECKING:
    from cache import AuthCache
    from providers import Client, ImageResponse, Provider

T = TypeVar("T")

_PROVIDER_OPTION = click.option(
    "--provider", "provider_name", required=True, metavar="NAME", help="cloudflare, cerebras, deepinfra, freenetfly."
)
_BASE_URL_OPTION = click.option("--base-url", metavar="ORIGIN", help="Rebase every endpoint onto ORIGIN.")


def _provider(name: str) -> type[Provider]:
    from providers import get_provider

    try:
        return get_provider(name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _protocol(ctx: click.Context, name: str) -> str | None:
    """``$HARVEST_<NAME>_PROTOCOL`` or ``[providers.NAME] protocol``, for a provider that has a choice."""
    from harvester._config import PROVIDER_PROTOCOLS, load_config
    from harvester._exceptions import ConfigError

    if name not in PROVIDER_PROTOCOLS:
        return None
    try:
        return load_config().protocol(name)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(USAGE)
    raise AssertionError("unreachable")  # pragma: no cover


def _cache(ctx: click.Context) -> AuthCache:
    from cache import AuthCache, CacheError

    try:
        return AuthCache.open((ctx.obj or {}).get("cache_path"))
    except CacheError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(CACHE_ERROR)
    raise AssertionError("unreachable")  # pragma: no cover


def _client(provider: type[Provider], cache: AuthCache, base_url: str | None, proxy: str | None = None) -> Client:
    from providers import Client

    return Client(provider, cache=cache, base_url=base_url, proxy=proxy)


def _run(ctx: click.Context, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one coroutine (which closes its client); provider errors exit with PROVIDER_ERROR."""
    from cache import CacheError
    from providers import ProviderError

    try:
        return asyncio.run(make())
    except CacheError as exc:  # the cache itself (a wrong key, a lock timeout), not the provider
        click.echo(f"error: {exc}", err=True)
        ctx.exit(CACHE_ERROR)
    except ProviderError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(PROVIDER_ERROR)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(USAGE)
    raise AssertionError("unreachable")  # pragma: no cover


@click.command()
@_PROVIDER_OPTION
@click.option("-m", "--model", default=None, help="Model name or alias (default: the provider's default).")
@click.option("--system", default=None, metavar="TEXT", help="A system message to send first.")
@click.option("--no-stream", is_flag=True, help="Ask for the whole answer at once.")
@_BASE_URL_OPTION
@click.option("--proxy", metavar="URL", help="Proxy for the API requests.")
@click.option("--reasoning/--no-reasoning", default=False, help="Also print the model's reasoning (to stderr).")
@click.argument("prompt", required=False)
@click.pass_context
def chat(
    ctx: click.Context,
    provider_name: str,
    model: str | None,
    system: str | None,
    no_stream: bool,
    base_url: str | None,
    proxy: str | None,
    reasoning: bool,
    prompt: str | None,
) -> None:
    """Stream an answer to PROMPT (read from stdin when not given) through the cached session."""
    from providers import Reasoning

    provider = _provider(provider_name)
    if prompt is None:
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise click.UsageError("empty prompt: pass PROMPT or pipe it on stdin")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    cache = _cache(ctx)

    # A provider with more than one wire protocol (Cloudflare) takes the one the config file names.
    options: dict[str, Any] = {}
    protocol = _protocol(ctx, provider.name())
    if protocol:
        options["protocol"] = protocol

    async def stream() -> None:
        out = sys.stdout
        async with _client(provider, cache, base_url, proxy) as client:
            async for item in client.chat(messages, model, stream=not no_stream, **options):
                if isinstance(item, str):
                    out.write(item)
                    out.flush()
                elif reasoning and isinstance(item, Reasoning):
                    click.echo(item.text, err=True, nl=False)
        out.write("\n")

    _run(ctx, stream)


@click.command()
@_PROVIDER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON: text models, image models, aliases.")
@click.option("--refresh", is_flag=True, help="Ignore the in-process model cache.")
@_BASE_URL_OPTION
@click.pass_context
def models(ctx: click.Context, provider_name: str, as_json: bool, refresh: bool, base_url: str | None) -> None:
    """List a provider's models (its live list where it has one)."""
    provider = _provider(provider_name)
    cache = _cache(ctx)

    async def load() -> tuple[list[str], list[str]]:
        async with _client(provider, cache, base_url) as client:
            names = await client.models(refresh=refresh)
            images = await client.image_models()
        return [n for n in names if n not in images], images

    text, images = _run(ctx, load)
    if as_json:
        import orjson

        data: dict[str, Any] = {
            "provider": provider.name(),
            "default_model": provider.default_model,
            "models": text,
            "image_models": images,
            "aliases": provider.model_aliases,
        }
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    for name in text:
        click.echo(name + ("  (default)" if name == provider.default_model else ""))
    for name in images:
        click.echo(name + "  (image)")


@click.command()
@click.option("--provider", "provider_name", default="deepinfra", show_default=True, metavar="NAME")
@click.option("-m", "--model", default=None, help="Image model (default: the provider's default image model).")
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to save images that come inline (data: URIs).",
)
@_BASE_URL_OPTION
@click.argument("prompt")
@click.pass_context
def image(
    ctx: click.Context, provider_name: str, model: str | None, output_dir: Path, base_url: str | None, prompt: str
) -> None:
    """Generate an image for PROMPT: print its URLs, or save inline images to files and print their paths."""
    provider = _provider(provider_name)
    if not provider.image_models:
        raise click.UsageError(f"{provider.name()} does not generate images")
    cache = _cache(ctx)

    async def create() -> ImageResponse:
        async with _client(provider, cache, base_url) as client:
            return await client.image(prompt, model)

    result = _run(ctx, create)
    for item in result.images:
        if item.startswith("data:"):
            click.echo(_save_data_uri(item, output_dir))
        else:
            click.echo(item)


def _save_data_uri(uri: str, directory: Path) -> Path:
    """Decode a ``data:`` URI into ``directory/image-<hash>.<ext>`` and return the path."""
    header, _, payload = uri.partition(",")
    mime = header[5:].split(";")[0] or "application/octet-stream"
    data = base64.b64decode(payload) if ";base64" in header else payload.encode()
    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}.get(mime, "bin")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"image-{hashlib.sha256(data).hexdigest()[:12]}.{extension}"
    path.write_bytes(data)
    return path
