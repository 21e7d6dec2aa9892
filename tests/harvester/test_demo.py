"""The README's first command, `scripts/demo`, run as a user runs it: every step it shows must work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.harvester.conftest import ROOT

PROVIDERS = ("cerebras", "cloudflare", "deepinfra", "freenetfly")


def test_the_demo_runs_end_to_end_and_leaves_nothing_behind(no_leftovers: Path) -> None:
    """scripts/demo harvests, lists, chats, serves (FlareSolverr /v1 and the openai SDK) and uses Redis, exit 0."""
    demo_dir = no_leftovers / "demo"
    env = {**os.environ, "HARVEST_DEMO_DIR": str(demo_dir)}
    for name in ("HARVEST_CACHE", "HARVEST_CACHE_KEY", "HARVEST_CACHE_KEY_FILE", "HARVEST_CONFIG"):
        env.pop(name, None)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo")], env=env, capture_output=True, text=True, timeout=300
    )
    out = result.stdout
    assert result.returncode == 0, (out[-3000:], result.stderr[-3000:])
    for provider in PROVIDERS:
        assert f"{provider}: 3 cookies" in out
        assert f"Hello from the {provider} emulator. You said: Say hello to {provider}" in out
    assert "4 cached session(s)" in out
    assert "request.get (empty cache: one browser run): ok, HTTP 200" in out
    assert "request.get (cached: a curl_cffi fetch with the session): ok, HTTP 200" in out
    assert "streamed: Hello from the cerebras emulator. You said: hi" in out
    assert "1 cached session(s)" in out  # the Redis cache, holding only what was harvested into it
    assert (demo_dir / "sessions.cache").is_file()
    # Its own temp files (the emulator's and the server's logs, Redis's dir) are gone; only the demo's cache stays.
    assert sorted(p.name for p in no_leftovers.iterdir()) == ["demo"]
