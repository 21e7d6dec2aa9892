"""The config file: defaults, the schema of issue 5, and errors that name the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester import ConfigError, load_config
from harvester._config import parse_config

GOOD = """
[daemon]
backend = "playwright"
max_concurrent = 3
browser_idle_close = 30
listen = "127.0.0.1:8790"

[browser]
path = "/usr/bin/chromium"

[providers.cerebras]
base_url = "http://127.0.0.1:8765/"
refresh_interval = 600
proxy = "http://user:secret@proxy:3128"
"""


def test_missing_default_file_means_defaults(isolated_env: Path) -> None:
    """With no file at $HARVEST_CONFIG every setting has its default."""
    config = load_config()
    assert config.daemon.backend == "nodriver" and config.daemon.max_concurrent is None
    assert config.providers == {}


def test_max_concurrent_defaults_to_one_per_provider(isolated_env: Path) -> None:
    """Without [daemon] max_concurrent the daemon runs every due provider at once; the key still bounds it."""
    from harvester.daemon import DaemonSettings

    config_path = isolated_env / "config" / "config.toml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    names = ("cerebras", "cloudflare", "deepinfra")
    config_path.write_text("".join(f"[providers.{name}]\n" for name in names))
    assert DaemonSettings.from_config(load_config()).max_concurrent == 3
    config_path.write_text("[daemon]\nmax_concurrent = 2\n" + "".join(f"[providers.{name}]\n" for name in names))
    assert DaemonSettings.from_config(load_config()).max_concurrent == 2


def test_full_schema_parses(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every documented key is read, origins are normalised, and the proxy stays out of repr."""
    path = isolated_env / "config.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.daemon.backend == "playwright" and config.daemon.browser_idle_close == 30.0
    assert config.browser.path == "/usr/bin/chromium"
    cerebras = config.provider("cerebras")
    assert cerebras.base_url == "http://127.0.0.1:8765" and cerebras.refresh_interval == 600.0
    assert "secret" not in repr(config)
    assert config.base_url("cerebras") == "http://127.0.0.1:8765"
    monkeypatch.setenv("HARVEST_CEREBRAS_BASE_URL", "http://127.0.0.1:1")
    assert config.base_url("cerebras") == "http://127.0.0.1:1"


def test_cloudflare_protocol_from_file_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[providers.cloudflare] protocol` is read; $HARVEST_CLOUDFLARE_PROTOCOL wins; unset means the default."""
    monkeypatch.delenv("HARVEST_CLOUDFLARE_PROTOCOL", raising=False)
    config = parse_config("[providers.cloudflare]\nprotocol = 'inference'\n")
    assert config.provider("cloudflare").protocol == "inference"
    assert config.protocol("cloudflare") == "inference"
    assert parse_config("").protocol("cloudflare") is None
    monkeypatch.setenv("HARVEST_CLOUDFLARE_PROTOCOL", "agent")
    assert config.protocol("cloudflare") == "agent"


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("[daemon]\nbackend = 'selenium'\n", "daemon.backend", 2),
        ("[daemon]\n\nmax_concurrent = 'two'\n", "daemon.max_concurrent", 3),
        ("[daemon]\nbogus = 1\n", "daemon.bogus", 2),
        ("[providers.nope]\nbase_url = 'http://x'\n", "providers.nope", 1),
        ("[providers.cerebras]\nrefresh_interval = -1\n", "providers.cerebras.refresh_interval", 2),
        ("[providers.cerebras]\nbase_url = 'ftp://x'\n", "providers.cerebras.base_url", 2),
        ("[providers.cloudflare]\nprotocol = 'grpc'\n", "providers.cloudflare.protocol", 2),
        ("[providers.cerebras]\nprotocol = 'agent'\n", "providers.cerebras.protocol", 2),
    ],
)
def test_bad_values_name_key_and_line(text: str, key: str, line: int) -> None:
    """A bad value raises ConfigError whose message and attributes name the key and its line."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=Path("c.toml"))
    assert info.value.key == key and info.value.line == line
    assert key in str(info.value) and f"line {line}" in str(info.value)


def test_invalid_toml_names_the_line() -> None:
    """A syntax error names its line."""
    with pytest.raises(ConfigError) as info:
        parse_config("[daemon]\nbackend = \n")
    assert info.value.line == 2


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    """Asking for a file that does not exist is an error, not silent defaults."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_daemon_timing_keys_parse_and_reach_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """min_margin, backoff_base, backoff_cap and shutdown_timeout are read as seconds and used by the daemon."""
    from harvester.daemon._settings import DaemonSettings

    for var in ("MIN_MARGIN", "BACKOFF_BASE", "BACKOFF_CAP", "SHUTDOWN_TIMEOUT"):
        monkeypatch.delenv(f"HARVEST_DAEMON_{var}", raising=False)
    config = parse_config("[daemon]\nmin_margin = 5\nbackoff_base = 0.5\nbackoff_cap = 10\nshutdown_timeout = 2.5\n")
    assert (config.daemon.min_margin, config.daemon.backoff_base) == (5.0, 0.5)
    assert (config.daemon.backoff_cap, config.daemon.shutdown_timeout) == (10.0, 2.5)
    settings = DaemonSettings.from_config(config, environ={})
    assert (settings.policy.min_margin, settings.policy.backoff_base, settings.policy.backoff_cap) == (5.0, 0.5, 10.0)
    assert settings.shutdown_timeout == 2.5
    # The environment still turns them down, as the daemon's end-to-end tests do.
    tuned = DaemonSettings.from_config(config, environ={"HARVEST_DAEMON_MIN_MARGIN": "3"})
    assert tuned.policy.min_margin == 3.0 and tuned.policy.backoff_base == 0.5


def test_daemon_timing_keys_default_when_absent() -> None:
    """Without the keys the daemon gets the production timings (60 s, 30 s, 1800 s, 4 s)."""
    from harvester.daemon._settings import DaemonSettings

    daemon = parse_config("[daemon]\n").daemon
    assert (daemon.min_margin, daemon.backoff_base, daemon.backoff_cap, daemon.shutdown_timeout) == (
        60.0,
        30.0,
        1800.0,
        4.0,
    )
    settings = DaemonSettings.from_config(parse_config(""), environ={})
    assert (settings.policy.min_margin, settings.policy.backoff_cap, settings.shutdown_timeout) == (60.0, 1800.0, 4.0)


@pytest.mark.parametrize("key", ["min_margin", "backoff_base", "backoff_cap", "shutdown_timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "'soon'", "nan"])
def test_daemon_timing_keys_must_be_positive_seconds(key: str, value: str) -> None:
    """Zero, negative, non-numeric and NaN timings are rejected naming the key and its line."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"[daemon]\n{key} = {value}\n", path=Path("c.toml"))
    assert info.value.key == f"daemon.{key}" and info.value.line == 2


def test_daemon_export_targets_parse_and_are_checked() -> None:
    """[daemon] export takes a list of {dir, format} tables; a bad format or shape names the key and the line."""
    config = parse_config('[daemon]\nexport = [{ dir = "~/x", format = "har" }, { dir = "/y", format = "curl" }]\n')
    assert [(str(t.dir), t.format) for t in config.daemon.export] == [
        (str(Path("~/x").expanduser()), "har"),
        ("/y", "curl"),
    ]
    for bad in ('export = [{ dir = "/y", format = "xml" }]', 'export = "/y"', 'export = [{ dir = "/y" }]'):
        with pytest.raises(ConfigError, match=r"daemon\.export") as info:
            parse_config(f"[daemon]\n{bad}\n")
        assert info.value.line == 2


def test_a_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is a ConfigError naming the file, not a UnicodeDecodeError."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"[daemon]\nlisten = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_daemon_browser_nice_defaults_to_0_and_reaches_the_harvester() -> None:
    """The daemon's browser gets niceness +0 (pinned) unless [daemon] browser_nice or its env var says otherwise."""
    from harvester.daemon._daemon import default_harvester_factory
    from harvester.daemon._settings import DaemonSettings

    assert parse_config("").daemon.browser_nice == 0
    settings = DaemonSettings.from_config(parse_config(""), environ={})
    assert settings.browser_nice == 0
    assert default_harvester_factory(settings).browser_nice == 0  # type: ignore[attr-defined]
    configured = parse_config("[daemon]\nbrowser_nice = 5\n")
    assert DaemonSettings.from_config(configured, environ={}).browser_nice == 5
    tuned = DaemonSettings.from_config(configured, environ={"HARVEST_DAEMON_BROWSER_NICE": "19"})
    assert tuned.browser_nice == 19 and tuned.restart_needed(settings) == ["browser_nice"]
    with pytest.raises(ValueError, match=r"HARVEST_DAEMON_BROWSER_NICE.*0 to 19"):
        DaemonSettings.from_config(configured, environ={"HARVEST_DAEMON_BROWSER_NICE": "-5"})


@pytest.mark.parametrize("value", ["-1", "20", "'low'", "1.5"])
def test_daemon_browser_nice_out_of_range_names_the_key(value: str) -> None:
    """A browser_nice outside 0 to 19, or not an integer, is a ConfigError naming the key and its line."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"[daemon]\n\nbrowser_nice = {value}\n", path=Path("c.toml"))
    assert info.value.key == "daemon.browser_nice" and info.value.line == 3
