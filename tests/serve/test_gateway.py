"""The OpenAI-compatible gateway, driven by the openai SDK (sync and async, stream and not) and `curl -N`."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace

import openai
import pytest

from cache import AuthCache
from providers import PROVIDERS
from tests.emulator import EmulatorThread
from tests.providers.conftest import make_record

from .conftest import TOKEN, Server

REPLY = "Hello from the freenetfly emulator. You said: hi there"
MESSAGES = [{"role": "user", "content": "hi there"}]


@pytest.fixture
def gateway(
    serve_factory: Callable[..., Server], emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """A server whose providers all live on the emulator, with fresh freenetfly and deepinfra records."""
    for name in PROVIDERS:
        monkeypatch.setenv(f"HARVEST_{name.upper()}_BASE_URL", emulator.url)
    cache = AuthCache.open()
    cache.put(make_record("freenetfly", emulator.url))
    cache.put(make_record("deepinfra", emulator.url))
    yield serve_factory(token=TOKEN, default_provider="freenetfly")


def _client(server: Server, **options: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, **options)  # type: ignore[arg-type]


def test_models_are_listed_as_provider_slash_model(gateway: Server) -> None:
    """`/v1/models` lists every provider's models as `provider/model`, plus the default provider's bare ids."""
    with _client(gateway) as client:
        ids = [model.id for model in client.models.list()]
    assert "freenetfly/gpt-4" in ids and "cerebras/llama3.1-8b" in ids and "deepinfra/stabilityai/sd3.5" in ids
    assert "gpt-4" in ids  # the default provider's bare id


def test_sync_completion_without_stream(gateway: Server) -> None:
    """A non-streamed completion is one `chat.completion` with the text, `finish_reason` and `usage`."""
    with _client(gateway) as client:
        answer = client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.object == "chat.completion" and answer.model == "freenetfly/gpt-4"
    assert answer.choices[0].message.content == REPLY and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens > 0


def test_sync_stream_ends_with_finish_reason_and_usage(gateway: Server) -> None:
    """A streamed completion is `chat.completion.chunk`s whose deltas make the reply, then finish_reason and usage."""
    with _client(gateway) as client:
        chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens > 0
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    # The provider's own events are forwarded under this answer's id and model, as the ones built here are.
    assert {c.model for c in chunks} == {"freenetfly/gpt-4"} and len({c.id for c in chunks}) == 1


async def test_async_stream_and_completion(gateway: Server) -> None:
    """The async SDK streams and completes the same way."""
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=TOKEN, max_retries=0)
    async with client:
        stream = await client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        answer = await client.chat.completions.create(
            model="freenetfly/gpt-4", messages=MESSAGES, temperature=0.2, max_tokens=50, stop=["\n"]
        )  # type: ignore[arg-type]
    assert text == REPLY and answer.choices[0].message.content == REPLY


def test_errors_are_openai_errors_with_the_right_status(gateway: Server, emulator: EmulatorThread) -> None:
    """Bad requests, tokens, models, rate limits and provider failures map to 400/401/404/429/502."""
    with _client(gateway) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="freenetfly/no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nobody/model", messages=MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="freenetfly/gpt-4", messages=[])
        emulator.configure(rate_limit_next=10, retry_after=0.01)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES)  # type: ignore[arg-type]
        emulator.configure(rate_limit_next=0, fail_next=10, fail_status=500)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES)  # type: ignore[arg-type]
        assert caught.value.status_code == 502
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    status, _, body = gateway.call("POST", "/v1/chat/completions", raw=b"{oops")
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "message" in body["error"]


def test_an_error_after_the_first_byte_is_an_sse_error_event(gateway: Server, emulator: EmulatorThread) -> None:
    """A stream cut off upstream ends with an SSE error event and `[DONE]`; the SDK raises while iterating."""
    emulator.configure(stream_chunks=400, cut_stream=True)
    body = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": True}).encode()
    status, _, text = gateway.call("POST", "/v1/chat/completions", raw=body)
    assert status == 200
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and '"error"' in events[-2]
    with _client(gateway) as client, pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES, stream=True):  # type: ignore[call-overload]
            pass


def test_curl_streams(gateway: Server) -> None:
    """`curl -N` gets the SSE stream, ending with `data: [DONE]`."""
    body = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": True})
    done = subprocess.run(
        [
            "curl",
            "-sSN",
            gateway.url + "/v1/chat/completions",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith("data: {") and done.stdout.endswith("data: [DONE]\n\n")
    assert '"chat.completion.chunk"' in done.stdout


def test_images_as_b64_json_and_url(gateway: Server) -> None:
    """`/v1/images/generations` answers `b64_json` (inline or downloaded) or `url`, per `response_format`."""
    with _client(gateway) as client:
        inline = client.images.generate(model="deepinfra/stabilityai/sd3.5", prompt="a cat", response_format="b64_json")
        remote = client.images.generate(
            model="deepinfra/black-forest-labs/FLUX-1-schnell", prompt="a cat", response_format="url"
        )
        fetched = client.images.generate(
            model="deepinfra/black-forest-labs/FLUX-1-schnell", prompt="a cat", response_format="b64_json"
        )
    assert inline.data and base64.b64decode(inline.data[0].b64_json or "").startswith(b"\x89PNG")
    assert remote.data and (remote.data[0].url or "").endswith(".png")
    assert fetched.data and base64.b64decode(fetched.data[0].b64_json or "").startswith(b"\x89PNG")


def test_a_client_that_leaves_mid_stream_leaves_the_server_well(
    gateway: Server, emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up mid-stream ends that stream quietly (no error logged); the next completion is answered."""
    import socket

    emulator.configure(stream_chunks=200, drip_ms=20.0)
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while b"chat.completion.chunk" not in received:  # the head and the first events may come apart
            data = sock.recv(65536)
            assert data, received
            received += data
    emulator.configure(stream_chunks=None, drip_ms=0.0)
    with _client(gateway) as client:
        answer = client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == REPLY
    status, _, text = gateway.call("GET", "/metrics")
    assert status == 200 and 'outcome="200",route="/v1/chat/completions"' in text
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_chunk_encoding_round_trips_any_text() -> None:
    """Every delta text (quotes, backslashes, control and non-ASCII characters) reads back exactly from its event."""
    import orjson

    from harvester.serve._openai import _ChunkEncoder
    from providers import FinishReason, Reasoning, Usage

    texts = ["a", 'q"uote', "back\\slash\\", "\x00\x1f\x7f", "ünï😀", "\u2028\u2029", "\n\r\t\b\f", '","', '\\","']
    encoder = _ChunkEncoder('odd"model\u2028')
    data = (
        encoder.start
        + encoder.encode(texts)
        + encoder.encode([Reasoning("hm"), "x", FinishReason("length"), Usage(1, 2, 3)])
        + encoder.encode([])
        + encoder.end()
    )
    events = [e.removeprefix(b"data: ") for e in data.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        *({"content": t} for t in texts),
        {"reasoning_content": "hm"},
        {"content": "x"},
        {},
    ]
    assert {c["model"] for c in chunks} == {'odd"model\u2028'} and len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_a_provider_timeout_is_a_504(
    serve_factory: Callable[..., Server], black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider that does not answer within the provider timeout gives an OpenAI timeout error with HTTP 504."""
    monkeypatch.setenv("HARVEST_FREENETFLY_BASE_URL", black_hole)
    AuthCache.open().put(make_record("freenetfly", origin=black_hole))  # a session, so no browser run is tried
    server = serve_factory(token=TOKEN, provider_timeout=0.5)
    for stream in (False, True):  # a stream that never began is still a plain HTTP error
        body = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": stream}).encode()
        status, _, answer = server.call("POST", "/v1/chat/completions", raw=body)
        assert status == 504, answer
        assert answer["error"]["type"] == "timeout_error" and answer["error"]["code"] == "timeout"
    with _client(server) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="freenetfly/gpt-4", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.status_code == 504


def test_a_provider_silent_mid_stream_ends_it_with_a_timeout_event(gateway: Server, emulator: EmulatorThread) -> None:
    """A stream whose provider goes silent past the provider timeout ends with an SSE timeout error and `[DONE]`."""
    gateway.state.limits = replace(gateway.state.limits, provider_timeout=0.5)
    emulator.configure(stream_chunks=3, drip_ms=3000)
    body = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": True}).encode()
    status, _, text = gateway.call("POST", "/v1/chat/completions", raw=body)
    assert status == 200
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "tok "  # the first event got through
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "timeout_error"


def _exchange(url: str, requests: list[bytes]) -> bytes:
    """Send ``requests`` on one connection and read until the server closes it (or 10 s pass)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        for request in requests:
            sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def test_streams_share_a_keep_alive_connection_and_http_1_0_reads_to_the_close(gateway: Server) -> None:
    """Two streams on one HTTP/1.1 connection each get a whole chunked answer; HTTP/1.0 gets one read to the close."""
    body = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": True}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    keep = (head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    last = (head + f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    answers = _exchange(gateway.url, [keep, last]).split(b"HTTP/1.1 200 OK\r\n")
    assert len(answers) == 3 and answers[0] == b""
    for answer in answers[1:]:
        headers, _, chunked = answer.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in headers and b"Content-Type: text/event-stream" in headers
        assert b"Date: " in headers and chunked.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert b"Connection: close" in answers[2] and b"Connection: close" not in answers[1]
    old = f"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    answer = _exchange(gateway.url, [old.encode() + body])
    headers, _, events = answer.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding" not in headers
    assert events.startswith(b"data: {") and events.endswith(b"data: [DONE]\n\n")
