"""The package surface: lazy re-exports, the error tree, and error translation in one place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import harvester
from harvester import (
    BlockedError,
    BrowserError,
    ChallengeTimeout,
    ConfigError,
    HarvestError,
    InvalidURLError,
    NeedsHeadfulError,
    ProxyAuthError,
    SiteUnreachableError,
    UnknownProviderError,
)
from harvester._driver import translate_error
from harvester.cli import _exit
from harvester.cli._oneshot import exit_code_for


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it resolves."""
    assert harvester.__all__ == sorted(harvester.__all__)
    for name in harvester.__all__:
        assert getattr(harvester, name) is not None


def test_import_is_cheap() -> None:
    """`import harvester` (and its names) never imports a browser driver or an HTTP library."""
    code = (
        "import sys, harvester\n"
        "from harvester import harvest, Harvester, HarvestError, load_config, classify\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('nodriver', 'playwright', 'aiohttp', 'websockets', 'curl_cffi')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_tree_has_one_root() -> None:
    """Every harvester error is a HarvestError."""
    kinds = (ChallengeTimeout, BlockedError, BrowserError, NeedsHeadfulError, ProxyAuthError, UnknownProviderError)
    for kind in (*kinds, ConfigError, SiteUnreachableError, InvalidURLError):
        assert issubclass(kind, HarvestError)


def _driver_errors() -> list[BaseException]:
    import nodriver
    import websockets.exceptions
    from playwright._impl._errors import Error, TargetClosedError
    from playwright._impl._errors import TimeoutError as PlaywrightTimeout

    return [
        nodriver.ProtocolException({"message": "boom", "code": -32000}),
        websockets.exceptions.ConnectionClosedError(None, None),
        Error("Target crashed"),
        TargetClosedError(),
        PlaywrightTimeout("Timeout 30000ms exceeded"),
        ConnectionError("Connection closed"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ]


@pytest.mark.parametrize("error", _driver_errors(), ids=lambda e: type(e).__name__)
def test_driver_errors_become_browser_errors(error: BaseException) -> None:
    """Each driver, WebSocket and connection error class maps to BrowserError, chained to the original."""
    translated = translate_error(error, provider="cerebras", url="http://x/")
    assert isinstance(translated, BrowserError)
    assert translated.__cause__ is error and translated.provider == "cerebras"


@pytest.mark.parametrize(
    "error",
    [
        KeyError("demoApiKey"),
        AttributeError("'NoneType' object has no attribute 'lower'"),
        ValueError("x"),
        TypeError("y"),
        RuntimeError("z"),
        ZeroDivisionError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_not_browser_errors(error: BaseException) -> None:
    """Map only what you know: an error of our own code is no browser failure, and is left to the caller."""
    assert translate_error(error, provider="cerebras", url="http://x/") is None


def test_harvest_errors_pass_through() -> None:
    """A HarvestError is returned unchanged."""
    error = BlockedError("no", provider="x")
    assert translate_error(error) is error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ChallengeTimeout("t", timeout=1), _exit.CHALLENGE_TIMEOUT),
        (BlockedError("b"), _exit.BLOCKED),
        (BrowserError("c"), _exit.BROWSER_FAILED),
        (NeedsHeadfulError("h"), _exit.NEEDS_HEADFUL),
        (UnknownProviderError("x", ["a"]), _exit.USAGE),
        (ProxyAuthError("p"), _exit.USAGE),
        (InvalidURLError("--url must be an http(s) URL"), _exit.USAGE),
        (SiteUnreachableError("cannot reach http://x/: connection refused"), _exit.SITE_UNREACHABLE),
        (HarvestError("other"), _exit.BROWSER_FAILED),
        (KeyError("a bug"), _exit.INTERNAL_ERROR),
    ],
)
def test_exit_codes(error: BaseException, code: int) -> None:
    """Each error class has its documented exit code."""
    assert exit_code_for(error) == code


def test_headful_waits_longer_unless_told() -> None:
    """A person needs longer than a script: headful defaults to 300 s, headless to 30 s; a timeout given
    explicitly is used as given (``--headful --timeout 10`` waits 10 s, not 300)."""
    from harvester import Harvester

    assert Harvester().timeout == 30.0
    assert Harvester(headful=True).timeout == 300.0
    assert Harvester(headful=True, timeout=10.0).timeout == 10.0


def test_the_early_launch_forks_chromium_before_asyncio_is_imported() -> None:
    """`harvest --provider` forks Chromium before loading asyncio (a tenth of a second of imports here)."""
    code = (
        "import sys\n"
        "from harvester._entry import _launch_early, _stop_early\n"
        "launch = _launch_early()\n"
        "print(launch is not None and launch.popen.pid > 0, 'asyncio' in sys.modules)\n"
        "_stop_early(launch)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "False"]


def test_the_early_launch_starts_the_browser_the_config_names(tmp_path: Path) -> None:
    """With `[browser] path` in the config, the Chromium forked before the imports is that one (before, it was the
    default one, which the harvester then stopped to launch the configured one: a launch wasted)."""
    from harvester._browser import find_browser

    configured = tmp_path / "configured-chromium"
    configured.symlink_to(find_browser())
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nbackend = "nodriver"\n\n[browser]\npath = "{configured}"\n')
    code = (
        "from harvester._entry import _launch_early, _stop_early\n"
        "launch = _launch_early()\n"
        "print(launch.executable)\n"
        "_stop_early(launch)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HARVEST_BROWSER"}
    env["HARVEST_CONFIG"] = str(config)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == str(configured)


@pytest.mark.parametrize(
    ("where", "text", "expected"),
    [
        ("HARVEST_CONFIG", '[browser]\npath = "/opt/shell"\n', "/opt/shell"),
        ("XDG_CONFIG_HOME", '[browser]\npath = "/opt/shell"\n', "/opt/shell"),
        ("HARVEST_CONFIG", 'browser.path = "/opt/shell"\n', "/opt/shell"),
        ("HARVEST_CONFIG", '[daemon]\nbackend = "nodriver"\n', None),
        ("HARVEST_CONFIG", "[browser\npath = \n", None),  # bad TOML: the harvester reports it, not this
        ("HARVEST_CONFIG", "browser = 3\n", None),
        ("HARVEST_CONFIG", None, None),  # no file
    ],
)
def test_the_early_launch_reads_the_browser_path_where_the_config_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, text: str | None, expected: str | None
) -> None:
    """The early launch finds the config file as `_config.default_config_path` does and reads `[browser] path`
    from it; a file it cannot read is left to the harvester, which reports it."""
    from harvester._config import default_config_path
    from harvester._entry import _configured_browser

    monkeypatch.delenv("HARVEST_BROWSER", raising=False)
    if where == "HARVEST_CONFIG":
        monkeypatch.setenv("HARVEST_CONFIG", str(tmp_path / "config.toml"))
    else:
        monkeypatch.delenv("HARVEST_CONFIG", raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = default_config_path()
    if text is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert _configured_browser() == expected
    monkeypatch.setenv("HARVEST_BROWSER", "/usr/bin/chromium")  # it wins over the config, in find_browser too
    assert _configured_browser() is None


def test_nodriver_loads_its_cdp_modules_on_first_use() -> None:
    """The nodriver driver imports nodriver without running its ~60 generated CDP modules until one is used."""
    code = (
        "import sys\n"
        "from harvester._nodriver import import_nodriver\n"
        "nodriver = import_nodriver()\n"
        "lazy = type(sys.modules['nodriver.cdp.network']).__name__\n"
        "cookie = nodriver.cdp.network.Cookie\n"  # the first attribute access loads the module
        "print(lazy, type(sys.modules['nodriver.cdp.network']).__name__, cookie.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["_LazyModule", "module", "Cookie"]
