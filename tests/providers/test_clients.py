"""Each provider against the emulator: streaming and not, models, aliases, headers, rebasing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import providers
from cache import AuthCache
from providers import (
    Cerebras,
    Cloudflare,
    DeepInfra,
    FinishReason,
    FreeNetfly,
    ImageResponse,
    ModelNotFoundError,
    OpenAICompatible,
    Reasoning,
    Usage,
)
from tests.emulator._server import EmulatorThread

from .conftest import CLIENT_HINTS, MESSAGES, USER_AGENT, make_record

CASES = [
    (Cloudflare, "llama-3.1-8b"),
    (Cerebras, "llama3.1-8b"),
    (DeepInfra, None),
    (FreeNetfly, "gpt-4"),
]


async def collect(gen: Any) -> list[Any]:
    return [item async for item in gen]


@pytest.fixture
def open_emulator(emulator: EmulatorThread) -> EmulatorThread:
    """The emulator with the Cloudflare gate open, for tests about the clients rather than the session."""
    emulator.configure(require_clearance=False)
    return emulator


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("provider", "model"), CASES, ids=lambda v: getattr(v, "__name__", v))
async def test_provider_answers(
    emulator: EmulatorThread, cache: AuthCache, provider: Any, model: str | None, stream: bool
) -> None:
    """Each provider, with a cleared session, yields the text, then FinishReason and Usage, streamed or not."""
    cache.put(make_record(provider.name(), emulator.url))
    items = await collect(provider.create_async_generator(model, MESSAGES, stream=stream, base_url=emulator.url))
    text = "".join(i for i in items if isinstance(i, str))
    assert text == f"Hello from the {provider.name()} emulator. You said: hi there"
    assert FinishReason("stop") in items
    usage = next(i for i in items if isinstance(i, Usage))
    assert usage.completion_tokens == 9
    if stream:
        assert sum(isinstance(i, str) for i in items) == 9
    assert emulator.stats["clearances_issued"] == 1  # ours, from make_record: no browser ran


async def test_reasoning_models_yield_reasoning(open_emulator: EmulatorThread) -> None:
    """An R1 model's reasoning comes as Reasoning items before the answer."""
    items = await collect(Cerebras.create_async_generator("deepseek-r1", MESSAGES, base_url=open_emulator.url))
    assert isinstance(items[0], Reasoning)
    assert isinstance(items[2], str)


async def test_record_identity_is_sent(emulator: EmulatorThread, cache: AuthCache) -> None:
    """The record's exact UA and client hints go out, and never curl_cffi's own User-Agent."""
    cache.put(make_record("freenetfly", emulator.url))
    await collect(FreeNetfly.create_async_generator("", MESSAGES, base_url=emulator.url))
    headers = emulator.stats["last_headers"]
    assert headers["user-agent"] == USER_AGENT
    for name, value in CLIENT_HINTS.items():
        assert headers[name] == value
    assert headers["origin"] == emulator.url
    assert "cf_clearance=" in headers["cookie"]
    # Like a browser, no h2c upgrade over cleartext HTTP (curl's HTTP/2 setting would ask for one).
    assert "upgrade" not in headers and "http2-settings" not in headers


async def test_no_record_still_never_leaks_curl_user_agent(open_emulator: EmulatorThread) -> None:
    """Without a record the fallback browser UA is sent, not curl_cffi's default one."""
    await collect(DeepInfra.create_async_generator(None, MESSAGES, base_url=open_emulator.url))
    headers = open_emulator.stats["last_headers"]
    assert headers["user-agent"].startswith("Mozilla/5.0")
    assert "curl" not in headers["user-agent"].lower()
    assert headers["x-deepinfra-source"] == "web-embed"


async def test_cerebras_key_from_session_is_cached(emulator: EmulatorThread, cache: AuthCache) -> None:
    """Cerebras fetches its demo key from /api/auth/session once, then keeps it in the record."""
    cache.put(make_record("cerebras", emulator.url))
    await collect(Cerebras.create_async_generator("llama3.1-8b", MESSAGES, base_url=emulator.url))
    await Cerebras.client(base_url=emulator.url).wait_background()
    assert emulator.stats["session_requests"] == 1
    record = cache.get("cerebras")
    assert record is not None and record.api_key and record.api_key.startswith("csk-")
    await collect(Cerebras.create_async_generator("llama3.1-8b", MESSAGES, base_url=emulator.url))
    assert emulator.stats["session_requests"] == 1
    assert emulator.stats["last_headers"]["authorization"] == f"Bearer {record.api_key}"


async def test_extra_body_is_merged(open_emulator: EmulatorThread) -> None:
    """extra_body is merged into the request JSON (here it overrides the chunking of the answer)."""
    items = await collect(
        FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=open_emulator.url, extra_body={"stream": False})
    )
    assert items[0] == "Hello from the freenetfly emulator. You said: hi there"


async def test_env_base_url_rebases(open_emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """HARVEST_<PROVIDER>_BASE_URL rebases every endpoint like base_url does."""
    monkeypatch.setenv("HARVEST_CLOUDFLARE_BASE_URL", open_emulator.url)
    items = await collect(Cloudflare.create_async_generator("", MESSAGES))
    assert FinishReason("stop") in items
    assert open_emulator.stats["api_requests"]["/agents/playground"] == 1


def test_aliases_resolve() -> None:
    """g4f-style aliases resolve to the providers' model names; empty means the default."""
    assert Cloudflare.get_model("llama-3.1-8b") == "@cf/meta/llama-3.1-8b-instruct-fp8"
    assert Cloudflare.get_model("gpt-oss-120b") == "@cf/openai/gpt-oss-120b"
    assert Cloudflare.get_model("qwen-2.5-coder") == "@cf/qwen/qwen2.5-coder-32b-instruct"
    assert Cloudflare.get_model("deepseek-r1-qwen-32b") == "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b"
    assert Cloudflare.get_model("llama-3.3-70b") == Cloudflare.default_model
    assert Cerebras.get_model("deepseek-r1") == "deepseek-r1-distill-llama-70b"
    assert Cerebras.get_model("llama-3.1-70b") == "llama3.1-70b"
    assert FreeNetfly.get_model("") == "gpt-3.5-turbo"


async def test_unknown_model_raises_with_closest_names() -> None:
    """An unknown model raises ModelNotFoundError before any request, naming the closest models."""
    with pytest.raises(ModelNotFoundError) as info:
        await collect(Cerebras.create_async_generator("llama3.1-8", MESSAGES))
    assert "llama3.1-8b" in info.value.closest


async def test_live_model_lists(open_emulator: EmulatorThread) -> None:
    """Cloudflare and DeepInfra load their live lists; DeepInfra's is split into text and image models."""
    names = await Cloudflare.get_models(base_url=open_emulator.url, refresh=True)
    assert "@cf/mistral/mistral-7b-instruct-v0.2" in names
    images = await DeepInfra.get_image_models(base_url=open_emulator.url)
    assert images == ["stabilityai/sd3.5", "black-forest-labs/FLUX-1-schnell"]
    text = await DeepInfra.get_models(base_url=open_emulator.url)
    assert text[0] == "meta-llama/Meta-Llama-3.1-70B-Instruct"


async def test_models_fall_back_when_unreachable() -> None:
    """An unreachable provider gives the built-in model list instead of an error."""
    names = await Cloudflare.get_models(base_url="http://127.0.0.1:9", refresh=True)
    assert names == Cloudflare.models


async def test_images(open_emulator: EmulatorThread) -> None:
    """DeepInfra makes images as data URIs or URLs, directly or from an image model in the chat call."""
    inline = await DeepInfra.create_async_image("a cat", base_url=open_emulator.url)
    assert inline.data_uris and inline.prompt == "a cat"
    items = await collect(DeepInfra.create_async_generator("flux-schnell", MESSAGES, base_url=open_emulator.url))
    assert len(items) == 1 and isinstance(items[0], ImageResponse)
    assert items[0].urls[0].startswith(open_emulator.url + "/static/img/")


async def test_openai_compatible(open_emulator: EmulatorThread) -> None:
    """OpenAICompatible talks to any base URL with a key and needs no session."""
    items = await collect(
        OpenAICompatible.create_async_generator(
            "gpt-4", MESSAGES, base_url=open_emulator.url + "/api/openai/v1", api_key="sk-test"
        )
    )
    assert FinishReason("stop") in items
    assert open_emulator.stats["last_headers"]["authorization"] == "Bearer sk-test"


def test_public_names_are_sorted_and_importable() -> None:
    """`__all__` is sorted (isort-style, as ruff keeps it: constants, classes, functions) and every name resolves."""

    def isort_key(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert providers.__all__ == sorted(providers.__all__, key=isort_key)
    for name in providers.__all__:
        assert getattr(providers, name) is not None


def test_import_does_not_load_curl_cffi() -> None:
    """Importing providers (and a provider class) does not import curl_cffi until a request is made."""
    code = "import sys, providers; providers.Cerebras; print('curl_cffi' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
