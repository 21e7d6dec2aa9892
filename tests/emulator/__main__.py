"""`python -m tests.emulator --port 0`: print the base URL as the first stdout line, then serve until a signal."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ._server import Emulator
from ._state import VARIANTS, EmulatorConfig


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description="Local AI provider emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--think-ms", type=float, default=EmulatorConfig.think_ms)
    parser.add_argument("--variant", choices=VARIANTS, default=EmulatorConfig.variant)
    parser.add_argument("--clearance-ttl", type=float, default=EmulatorConfig.clearance_ttl)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    config = EmulatorConfig().with_knobs(
        {"think_ms": args.think_ms, "variant": args.variant, "clearance_ttl": args.clearance_ttl}
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets a flag; shutdown happens below, in order.
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(config, host=args.host, port=args.port) as emu:
        print(emu.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM or SIGINT; returns the exit code (0)."""
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
