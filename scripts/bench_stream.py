"""Streaming benchmark: this client against the OpenAI SDK, httpx, aiohttp, plain curl_cffi and a raw-socket floor.

Run: ``.venv/bin/python scripts/bench_stream.py [--repeat N]``. The emulator runs in its own process
(``python -m tests.emulator --port 0``) with ``require_clearance=False`` so the server never shares the client's
event loop. Every client parses the same OpenAI SSE stream into text deltas and must count every chunk.

Cases (targets from issue 4):
  (a) one stream of 20,000 chunks              <= 1.3x the floor
  (b) 300 sequential streams of 5 chunks       <= 0.6 ms per request
  (c) 50 concurrent streams of 1,000 chunks    <= 0.3 s

The Cloudflare agent protocol (issue 15), over a WebSocket: this client (curl_cffi's WebSocket with the browser's
TLS fingerprint) against a plain aiohttp WebSocket client as the baseline, and curl_cffi's WebSocket driven by hand
(the library without our layers). Every client sends the same opening frames and chat request and counts the
``text-delta`` parts until ``finish``.
  (d) one reply of 20,000 deltas
  (e) 50 concurrent replies of 1,000 deltas
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PATH = "/api/openai/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
BODY = {"model": "gpt-4", "messages": MESSAGES, "stream": True}

Stream = Callable[[], Awaitable[int]]


def configure(url: str, **knobs: Any) -> None:
    request = urllib.request.Request(url + "/__emulator__/config", data=orjson.dumps(knobs), method="POST")
    urllib.request.urlopen(request, timeout=10).read()


def _count(payload: bytes) -> int:
    """1 if an SSE data payload carries a text delta (what every client counts)."""
    if payload == b"[DONE]":
        return 0
    choices = orjson.loads(payload).get("choices")
    return 1 if choices and choices[0].get("delta", {}).get("content") else 0


# -- the clients: each factory returns (stream coroutine factory, close) -------------------------------------


async def this_client(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    from providers import FreeNetfly, close_transport

    async def stream() -> int:
        n = 0
        async for item in FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=url):
            if type(item) is str:
                n += 1
        return n

    return stream, close_transport


async def openai_sdk(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    import httpx
    import openai

    client = openai.AsyncOpenAI(
        base_url=url + "/api/openai/v1",
        api_key="x",
        max_retries=0,
        timeout=120.0,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100), timeout=120.0
        ),
    )

    async def stream() -> int:
        n = 0
        response = await client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
        return n

    return stream, client.close


async def httpx_client(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100), timeout=120.0)
    body = orjson.dumps(BODY)
    headers = {"Content-Type": "application/json"}

    async def stream() -> int:
        n = 0
        async with client.stream("POST", url + PATH, content=body, headers=headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    n += _count(line[6:].encode())
        return n

    return stream, client.aclose


async def aiohttp_client(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    body = orjson.dumps(BODY)
    headers = {"Content-Type": "application/json"}

    async def stream() -> int:
        n = 0
        async with session.post(url + PATH, data=body, headers=headers) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    n += _count(line[6:].rstrip())
        return n

    return stream, session.close


async def curl_cffi_lines(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    from curl_cffi.requests import AsyncSession

    session: AsyncSession[Any] = AsyncSession(max_clients=100)
    body = orjson.dumps(BODY)
    headers = {"Content-Type": "application/json"}

    async def stream() -> int:
        n = 0
        response = await session.post(url + PATH, data=body, headers=headers, stream=True)
        async for line in response.aiter_lines():
            if line.startswith(b"data: "):
                n += _count(line[6:])
        await response.aclose()
        return n

    return stream, session.close


class _RawConnection:
    """The floor: HTTP/1.1 keep-alive over an asyncio stream, chunked decoding by hand, split on blank lines."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        body = orjson.dumps(BODY)
        self.request = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def stream(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        assert reader is not None
        self.writer.write(self.request)
        await reader.readuntil(b"\r\n\r\n")
        pending = b""
        n = 0
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return n
            data = await reader.readexactly(size + 2)
            events = (pending + data[:-2]).split(b"\n\n")
            pending = events.pop()
            for event in events:
                n += _count(event[6:])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def floor(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    idle: list[_RawConnection] = []
    every: list[_RawConnection] = []

    async def stream() -> int:
        connection = idle.pop() if idle else _RawConnection(parts.hostname or "", parts.port or 0)
        if connection not in every:
            every.append(connection)
        try:
            return await connection.stream()
        finally:
            idle.append(connection)

    async def close() -> None:
        for connection in every:
            await connection.close()

    return stream, close


CLIENTS: dict[str, Callable[[str], Awaitable[tuple[Stream, Callable[[], Awaitable[None]]]]]] = {
    "floor (raw socket)": floor,
    "harvest (this client)": this_client,
    "curl_cffi aiter_lines": curl_cffi_lines,
    "aiohttp": aiohttp_client,
    "httpx": httpx_client,
    "openai SDK": openai_sdk,
}


# -- the agent protocol's clients ----------------------------------------------------------------------------

AGENT_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"


def _agent_frames() -> tuple[str, list[bytes]]:
    """The socket path and the frames every agent client sends (the same bytes for all of them)."""
    from providers._agent_protocol import chat_request, opening_frames, socket_url, split_messages

    system, ui = split_messages(MESSAGES)
    frames = [*opening_frames("playground-bench", model=AGENT_MODEL, temperature=None, system=system)]
    frames.append(chat_request("req_bench", ui))
    url = socket_url("http://x", "playground-bench", AGENT_MODEL, "pk")
    return url[len("ws://x") :], frames


def _agent_count(message: bytes | str) -> int:
    """1 for a text delta, 0 for another frame, -1 at the reply's end (how the baselines read a frame)."""
    frame = orjson.loads(message)
    if frame.get("type") != "cf_agent_use_chat_response":
        return 0
    if frame.get("done"):
        return -1
    part = orjson.loads(frame["body"])
    kind = part.get("type")
    return 1 if kind == "text-delta" and part.get("delta") else -1 if kind == "finish" else 0


async def agent_this_client(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    from providers import Cloudflare

    async def stream() -> int:
        n = 0
        async for item in Cloudflare.create_async_generator("", MESSAGES, base_url=url, protocol="agent"):
            if type(item) is str:
                n += 1
        return n

    async def close() -> None:
        pass

    return stream, close


async def agent_aiohttp(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    path, frames = _agent_frames()
    target = url.replace("http", "ws", 1) + path

    async def stream() -> int:
        n = 0
        async with session.ws_connect(target, origin=url) as ws:
            for frame in frames:
                await ws.send_str(frame.decode())
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                counted = _agent_count(message.data)
                if counted < 0:
                    break
                n += counted
        return n

    return stream, session.close


async def agent_curl_cffi(url: str) -> tuple[Stream, Callable[[], Awaitable[None]]]:
    from curl_cffi import CurlWsFlag
    from curl_cffi.requests import AsyncSession

    session: AsyncSession[Any] = AsyncSession(max_clients=100)
    path, frames = _agent_frames()
    target = url.replace("http", "ws", 1) + path

    async def stream() -> int:
        n = 0
        ws = await session.ws_connect(target, headers={"Origin": url}, recv_queue_size=1024)
        try:
            for frame in frames:
                await ws.send(frame, CurlWsFlag.TEXT)
            while True:
                data, flags = await ws.recv()
                if flags & CurlWsFlag.CLOSE:
                    break
                counted = _agent_count(data)
                if counted < 0:
                    break
                n += counted
        finally:
            await ws.close()
        return n

    return stream, session.close


AGENT_CLIENTS: dict[str, Callable[[str], Awaitable[tuple[Stream, Callable[[], Awaitable[None]]]]]] = {
    "aiohttp WebSocket (baseline)": agent_aiohttp,
    "harvest Cloudflare (agent)": agent_this_client,
    "curl_cffi WebSocket by hand": agent_curl_cffi,
}


# -- the cases -------------------------------------------------------------------------------------------------


async def case_a(stream: Stream) -> float:
    started = time.perf_counter()
    n = await stream()
    elapsed = time.perf_counter() - started
    assert n == 20_000, n
    return elapsed


async def case_b(stream: Stream) -> float:
    started = time.perf_counter()
    for _ in range(300):
        n = await stream()
        assert n == 5, n
    return (time.perf_counter() - started) / 300


async def case_c(stream: Stream) -> float:
    started = time.perf_counter()
    counts = await asyncio.gather(*[stream() for _ in range(50)])
    elapsed = time.perf_counter() - started
    assert counts == [1000] * 50, counts[:3]
    return elapsed


CASES = [
    ("(a) 1 x 20,000 chunks", 20_000, case_a, "s"),
    ("(b) 300 x 5 chunks, per request", 5, case_b, "ms"),
    ("(c) 50 x 1,000 concurrent", 1000, case_c, "s"),
]
AGENT_CASES = [
    ("(d) agent: 1 x 20,000 deltas", 20_000, case_a, "s"),
    ("(e) agent: 50 x 1,000 concurrent", 1000, case_c, "s"),
]


async def run(
    url: str, repeat: int, cases: list[Any] | None = None, clients: dict[str, Any] | None = None
) -> dict[str, dict[str, list[float]]]:
    """Every client's timings per case. The clients take turns within each repeat, so a load that comes and
    goes on a shared machine (another benchmark, a browser) weighs on all of them alike."""
    cases = CASES if cases is None else cases
    clients = CLIENTS if clients is None else clients
    results: dict[str, dict[str, list[float]]] = {name: {client: [] for client in clients} for name, *_ in cases}
    for case_name, chunks, case, _ in cases:
        configure(url, stream_chunks=chunks)
        opened = {client: await factory(url) for client, factory in clients.items()}
        try:
            for stream, _close in opened.values():
                await stream()  # warm up: connections, imports, the TLS-less handshake
            for _ in range(repeat):
                for client, (stream, _close) in opened.items():
                    gc.collect()
                    results[case_name][client].append(await case(stream))
        finally:
            for _stream, close in opened.values():
                await close()
        if clients is not CLIENTS:
            from providers import close_transport

            await close_transport()
    return results


def print_agent_table(results: dict[str, dict[str, list[float]]]) -> None:
    """Per agent case and client: the median, the best, and the median's ratio to the aiohttp baseline's."""
    clients = list(AGENT_CLIENTS)
    width = max(len(c) for c in clients) + 2
    for case_name, _, _, unit in AGENT_CASES:
        row = {client: statistics.median(times) for client, times in results[case_name].items()}
        best = {client: min(times) for client, times in results[case_name].items()}
        base = row[clients[0]]
        print(f"\n{case_name}   (median of {len(results[case_name][clients[0]])})")
        for client in clients:
            print(
                f"  {client:<{width}} {row[client]:9.3f} {unit:<2} (best {best[client]:8.3f})"
                f"  {row[client] / base:6.2f}x aiohttp"
            )


def print_table(results: dict[str, dict[str, list[float]]]) -> None:
    """Per case and client: the median and the best of the repeats, and the median's ratio to the floor's."""
    targets = {"(a)": "<= 1.3x floor", "(b)": "<= 0.6 ms", "(c)": "<= 0.3 s"}
    clients = list(CLIENTS)
    width = max(len(c) for c in clients) + 2
    for case_name, _, _, unit in CASES:
        row = {client: statistics.median(times) for client, times in results[case_name].items()}
        best = {client: min(times) for client, times in results[case_name].items()}
        base = row["floor (raw socket)"]
        fastest = min((v, k) for k, v in row.items() if k != "floor (raw socket)")[1]
        scale = 1000 if unit == "ms" else 1
        print(f"\n{case_name}   target {targets[case_name[:3]]}   (median of {len(results[case_name][clients[0]])})")
        for client in clients:
            mark = "  <- fastest client" if client == fastest else ""
            print(
                f"  {client:<{width}} {row[client] * scale:9.3f} {unit:<2} (best {best[client] * scale:8.3f})"
                f"  {row[client] / base:6.2f}x floor{mark}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per client and case (the median is shown)")
    parser.add_argument(
        "--clients", default="", help="comma-separated name fragments: run only these clients (the floor always runs)"
    )
    parser.add_argument("--cases", default="abcde", help="which cases to run, e.g. 'ac' (default: all)")
    args = parser.parse_args()
    CASES[:] = [case for case in CASES if case[0][1] in args.cases]
    AGENT_CASES[:] = [case for case in AGENT_CASES if case[0][1] in args.cases]
    if args.clients:
        wanted = [part.strip().lower() for part in args.clients.split(",") if part.strip()]
        for name in list(CLIENTS)[1:]:
            if not any(part in name.lower() for part in wanted):
                del CLIENTS[name]
    home = tempfile.mkdtemp(prefix="harvest-bench-")
    # The client reads its (empty) session cache from here, never the user's.
    os.environ["HARVEST_CACHE"] = str(Path(home) / "sessions.cache")
    os.environ["HARVEST_CACHE_KEY_FILE"] = str(Path(home) / "cache.key")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        configure(url, require_clearance=False)
        results = asyncio.run(run(url, args.repeat)) if CASES else {}
        agent_results = asyncio.run(run(url, args.repeat, AGENT_CASES, AGENT_CLIENTS)) if AGENT_CASES else {}
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(home, ignore_errors=True)  # the bench's throwaway cache and key
    if CASES:
        print_table(results)
    if AGENT_CASES:
        print_agent_table(agent_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
