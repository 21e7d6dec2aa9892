"""Exports read by g4f's own cookie reader: what ``g4f.cookies.read_cookie_files`` finds in an export directory.

Not a speed benchmark: a check on the consumer side that needs g4f (the bench extra). It exports a cerebras-shaped
record with ``harvest cache export DIR --format har`` and ``--format cookies.json`` into two directories, points
g4f at each, and reports the domains, cookie names and header names it loaded (never the values).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cache import AuthCache, Cookie, SessionRecord, generate_key

HARVEST = str(Path(sys.executable).with_name("harvest"))


def main() -> int:
    try:
        import g4f.cookies as g4f_cookies
    except ImportError:
        print("g4f is not installed (pip install -e '.[bench]'); skipped")
        return 0
    with tempfile.TemporaryDirectory(prefix="harvest-g4f-") as tmp:
        env = {"HARVEST_CACHE": f"{tmp}/sessions.cache", "HARVEST_CACHE_KEY": generate_key(), "PATH": ""}
        cache = AuthCache.open(env["HARVEST_CACHE"], key=env["HARVEST_CACHE_KEY"])
        expires = datetime.now(UTC) + timedelta(hours=1)
        cache.put(
            SessionRecord(
                provider="cerebras",
                cookies=[
                    Cookie(
                        "cf_clearance", "clearance-value", ".cerebras.ai", expires=expires.timestamp(), http_only=True
                    ),
                    Cookie("__cf_bm", "bm-value", ".cerebras.ai"),
                ],
                user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0.0.0 Safari/537.36",
                headers={"sec-ch-ua-platform": '"Linux"'},
                api_key="csk-demo-key",
                origin="https://inference.cerebras.ai",
                expires_at=expires,
            )
        )
        failures = 0
        for fmt in ("har", "cookies.json"):
            directory = Path(tmp) / fmt
            subprocess.run(
                [HARVEST, "cache", "export", str(directory), "--format", fmt],
                env=env,
                check=True,
                capture_output=True,
            )
            g4f_cookies.CookiesConfig.cookies.clear()
            g4f_cookies.HeadersConfig.headers.clear()
            g4f_cookies.read_cookie_files(str(directory))
            cookies = {domain: sorted(values) for domain, values in g4f_cookies.CookiesConfig.cookies.items()}
            headers = {domain: sorted(values) for domain, values in g4f_cookies.HeadersConfig.headers.items()}
            print(f"{fmt:>12}: g4f found cookies {cookies} and headers {headers or '-'}")
            if cookies.get(".cerebras.ai") != ["__cf_bm", "cf_clearance"]:
                failures += 1
                print(f"{fmt:>12}: FAILED: g4f did not find the cerebras cookies")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
