"""`harvest serve` as a process: start-up refusals, serving, and SIGTERM draining in-flight requests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.emulator import EmulatorThread
from tests.harvester.conftest import harvest_cmd


def test_non_loopback_without_a_token_refuses_to_start(harvest_env: dict[str, str]) -> None:
    """`--listen 0.0.0.0:0` with no token exits 2 with one clear line; `--no-auth` would start."""
    env = {k: v for k, v in harvest_env.items() if k != "HARVEST_SERVER_TOKEN"}
    done = subprocess.run(
        harvest_cmd("serve", "--listen", "0.0.0.0:0"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "without a token" in lines[0] and "--no-auth" in lines[0]


def test_sigterm_drains_in_flight_requests(harvest_env: dict[str, str], emulator: EmulatorThread) -> None:
    """A request in flight when SIGTERM arrives is answered, then the process exits 0 with its browser gone."""
    emulator.configure(think_ms=1500)
    process = subprocess.Popen(
        harvest_cmd("serve", "--listen", "127.0.0.1:0"), env=harvest_env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the server never said where it listens"
        body = json.dumps({"cmd": "request.get", "url": emulator.url + "/"}).encode()
        request = urllib.request.Request(url + "/v1", data=body, method="POST")
        with ThreadPoolExecutor(max_workers=1) as pool:
            answer = pool.submit(lambda: json.loads(urllib.request.urlopen(request, timeout=60).read()))
            deadline = time.monotonic() + 30
            while emulator.stats["challenge_pages"] == 0 and time.monotonic() < deadline:  # the browser is at work
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            assert answer.result(timeout=60)["status"] == "ok"
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert "serve.stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


ROOT = Path(__file__).resolve().parents[2]


def test_serve_refuses_an_aiohttp_it_was_not_written_for() -> None:
    """`harvest serve` uses aiohttp internals of one series: with another installed it exits 2 with one line."""
    code = (
        "import sys, aiohttp\n"
        "aiohttp.__version__ = '3.15.0'\n"  # as if pip had installed the next series
        "sys.argv = ['harvest', 'serve', '--listen', '127.0.0.1:0']\n"
        "from harvester._entry import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "harvest: error: harvest serve relies on aiohttp 3.14.x internals, but aiohttp 3.15.0 is installed; "
        "install the version harvest pins: pip install 'aiohttp>=3.14,<3.15'"
    ]


def test_the_aiohttp_pin_is_the_series_serve_was_written_for() -> None:
    """pyproject.toml pins aiohttp to the series whose internals harvest serve uses, and that series is installed."""
    import tomllib

    import aiohttp

    from harvester.serve._limits import AIOHTTP_SERIES

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"aiohttp>={AIOHTTP_SERIES},<3.15" in deps
    assert aiohttp.__version__.startswith(AIOHTTP_SERIES + ".")
