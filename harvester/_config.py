"""The harvester's configuration: one frozen dataclass and the TOML loader, the only code that reads the file.

```toml
[daemon]
backend = "nodriver"        # or "playwright"
max_concurrent = 4          # harvests at once, each a tab of one browser (default: one per provider)
browser_idle_close = 60     # seconds a browser stays up with nothing to do
browser_nice = 0            # CPU niceness of the daemon's Chromium (0-19; Linux), which it cannot undo
listen = "127.0.0.1:8790"   # optional status server
min_margin = 60             # seconds: refresh at least this long before a record expires
backoff_base = 30           # seconds: the first retry after a failed harvest (doubles per failure)
backoff_cap = 1800          # seconds: the longest wait between retries
shutdown_timeout = 4        # seconds in-flight harvests get after SIGTERM
export = [{ dir = "~/.local/share/g4f/cookies", format = "har" }]   # optional: files rewritten after each refresh

[browser]
path = "/usr/bin/chromium"  # optional; $HARVEST_BROWSER wins

[server]                    # `harvest serve` (and the daemon's listen address)
listen = "127.0.0.1:8191"   # FlareSolverr's port
token = "..."               # Bearer token; $HARVEST_SERVER_TOKEN wins; or token_file = "/path"
default_provider = "cerebras"  # optional: bare model ids of the OpenAI gateway go to this provider

[cache]
url = "redis://:PASSWORD@host:6379/0"  # optional: a cache path or redis:// URL; --cache and $HARVEST_CACHE win

[providers.cerebras]
base_url = "http://127.0.0.1:8765"   # optional, as --base-url ($HARVEST_CEREBRAS_BASE_URL wins)
refresh_interval = 600               # optional
proxy = "http://..."                 # optional
url = "https://example.com/"         # only for a site with no recipe (as `harvest --url`)

[providers.cloudflare]
protocol = "agent"                   # or "inference" (the older HTTP API); $HARVEST_CLOUDFLARE_PROTOCOL wins
```
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._driver import BACKENDS, Backend
from ._exceptions import ConfigError
from ._recipes import RECIPES, check_url, env_base_url, normalize_origin

CONFIG_ENV = "HARVEST_CONFIG"
#: Providers that speak more than one wire protocol, and their protocols (providers._cloudflare.PROTOCOLS).
PROVIDER_PROTOCOLS: Mapping[str, tuple[str, ...]] = MappingProxyType({"cloudflare": ("agent", "inference")})


@dataclass(frozen=True, slots=True)
class ExportTarget:
    """One ``[daemon] export`` entry: after each refresh, write the record to ``dir`` in ``format``."""

    dir: Path
    format: str


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """``[daemon]``: how the refresh daemon runs."""

    backend: Backend = "nodriver"
    max_concurrent: int | None = None  # None: as many as there are providers to harvest
    browser_idle_close: float = 60.0
    browser_nice: int = 0  # added to the daemon's Chromium, which can never raise a thread above it
    listen: str | None = None
    min_margin: float = 60.0
    backoff_base: float = 30.0
    backoff_cap: float = 1800.0
    shutdown_timeout: float = 4.0
    export: tuple[ExportTarget, ...] = ()


#: ``[daemon]`` keys that are a positive number of seconds, with their defaults.
_DAEMON_SECONDS = {"min_margin": 60.0, "backoff_base": 30.0, "backoff_cap": 1800.0, "shutdown_timeout": 4.0}


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """``[cache]``: where the cache lives (a path or a ``redis://`` URL); ``--cache`` and ``$HARVEST_CACHE`` win."""

    url: str | None = None


@dataclass(frozen=True, slots=True)
class BrowserConfig:
    """``[browser]``: which Chromium to launch."""

    path: str | None = None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: how ``harvest serve`` listens. The token is a secret, so it stays out of repr."""

    listen: str = "127.0.0.1:8191"
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    default_provider: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """``[providers.NAME]``: per-provider overrides. The proxy may hold a password, so it stays out of repr."""

    name: str
    base_url: str | None = None
    refresh_interval: float | None = None
    proxy: str | None = field(default=None, repr=False)
    url: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole config file (all defaults when there is no file)."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    browser: BrowserConfig = field(default_factory=BrowserConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    providers: Mapping[str, ProviderConfig] = field(default_factory=lambda: MappingProxyType({}))
    path: Path | None = None

    def provider(self, name: str) -> ProviderConfig:
        """The section for ``name`` (an empty one if the file has none)."""
        return self.providers.get(name) or ProviderConfig(name=name)

    def base_url(self, name: str, environ: Mapping[str, str] | None = None) -> str | None:
        """``$HARVEST_<NAME>_BASE_URL``, else the config's ``base_url`` for ``name``."""
        return env_base_url(name, environ) or self.provider(name).base_url

    def protocol(self, name: str, environ: Mapping[str, str] | None = None) -> str | None:
        """``$HARVEST_<NAME>_PROTOCOL``, else the config's ``protocol`` for ``name`` (None: the provider's default)."""
        env = os.environ if environ is None else environ
        key = "HARVEST_" + "".join(c if c.isalnum() else "_" for c in name.upper()) + "_PROTOCOL"
        return env.get(key) or self.provider(name).protocol


def default_config_path() -> Path:
    """``$HARVEST_CONFIG``, else ``<user config dir>/harvest/config.toml``."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("harvest")) / "config.toml"


def cache_location(explicit: str | None) -> str | None:
    """Where to open the cache: ``explicit`` (``--cache``), else None when ``$HARVEST_CACHE`` is set (the cache reads
    it), else the config's ``[cache] url``. A config that cannot be read is left to the commands that need it."""
    if explicit or os.environ.get("HARVEST_CACHE"):
        return explicit
    if not default_config_path().exists():
        return None
    try:
        return load_config().cache.url
    except ConfigError:
        return None


def load_config(path: str | os.PathLike[str] | None = None, *, required: bool = False) -> Config:
    """Load the TOML config from ``path`` (default :func:`default_config_path`).

    A missing default file means all defaults; a missing explicit ``path`` is an error, and so is a missing
    default file with ``required`` (the daemon's reload: a file that vanished is not "no providers").

    Raises:
        ConfigError: unreadable, not TOML, an unknown key or a bad value; the message names the file, the
            key and the line.
    """
    explicit = path is not None
    file = Path(path).expanduser() if path is not None else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit or required:
            raise ConfigError(f"config file {file} does not exist", path=str(file)) from None
        return Config()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8", path=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}", path=str(file)) from None
    return parse_config(text, path=file)


def parse_config(text: str, *, path: Path | None = None) -> Config:
    """Parse config TOML text (pure).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    where = str(path) if path else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"{where}: not valid TOML: {exc}", path=where, line=int(match.group(1)) if match else None
        ) from None
    checker = _Checker(text, where)
    checker.only(data, "", {"daemon", "browser", "server", "cache", "providers"})

    raw_daemon = checker.table(data, "daemon")
    checker.only(
        raw_daemon,
        "daemon",
        {"backend", "max_concurrent", "browser_idle_close", "browser_nice", "listen", "export", *_DAEMON_SECONDS},
    )
    backend = checker.value(raw_daemon, "daemon", "backend", str, "nodriver")
    if backend not in BACKENDS:
        checker.fail("daemon", "backend", f"must be one of {', '.join(BACKENDS)}, not {backend!r}")
    max_concurrent = checker.value(raw_daemon, "daemon", "max_concurrent", int, None)
    if max_concurrent is not None and max_concurrent < 1:
        checker.fail("daemon", "max_concurrent", "must be at least 1")
    idle = float(checker.value(raw_daemon, "daemon", "browser_idle_close", (int, float), 60.0))
    if idle < 0:
        checker.fail("daemon", "browser_idle_close", "must not be negative")
    browser_nice = checker.value(raw_daemon, "daemon", "browser_nice", int, 0)
    if not 0 <= browser_nice <= 19:
        checker.fail("daemon", "browser_nice", "must be from 0 (ours) to 19 (the lowest CPU priority)")
    listen = checker.value(raw_daemon, "daemon", "listen", str, None)
    if listen is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", listen):
        checker.fail("daemon", "listen", f"must be HOST:PORT, not {listen!r}")
    seconds: dict[str, float] = {}
    for key, default in _DAEMON_SECONDS.items():
        value = float(checker.value(raw_daemon, "daemon", key, (int, float), default))
        if not math.isfinite(value) or value <= 0:
            checker.fail("daemon", key, "must be a positive number of seconds")
        seconds[key] = value
    daemon = DaemonConfig(
        backend=backend,
        max_concurrent=max_concurrent,
        browser_idle_close=idle,
        browser_nice=browser_nice,
        listen=listen,
        export=_export_targets(checker, raw_daemon.get("export", [])),
        **seconds,
    )

    raw_browser = checker.table(data, "browser")
    checker.only(raw_browser, "browser", {"path"})
    browser = BrowserConfig(path=checker.value(raw_browser, "browser", "path", str, None))

    raw_server = checker.table(data, "server")
    checker.only(raw_server, "server", {"listen", "token", "token_file", "default_provider"})
    server_listen = checker.value(raw_server, "server", "listen", str, "127.0.0.1:8191")
    if not re.fullmatch(r"[^\s]+:\d{1,5}", server_listen):
        checker.fail("server", "listen", f"must be HOST:PORT, not {server_listen!r}")
    server_token = checker.value(raw_server, "server", "token", str, None)
    if server_token is not None and not server_token.strip():
        checker.fail("server", "token", "must not be empty")
    server = ServerConfig(
        listen=server_listen,
        token=server_token,
        token_file=checker.value(raw_server, "server", "token_file", str, None),
        default_provider=checker.value(raw_server, "server", "default_provider", str, None),
    )
    raw_cache = checker.table(data, "cache")
    checker.only(raw_cache, "cache", {"url"})
    cache = CacheConfig(url=checker.value(raw_cache, "cache", "url", str, None) or None)

    providers: dict[str, ProviderConfig] = {}
    for name, raw in checker.table(data, "providers").items():
        section = f"providers.{name}"
        if not isinstance(raw, dict):
            checker.fail("providers", name, "must be a table, e.g. [providers.cerebras]")
        checker.only(raw, section, {"base_url", "refresh_interval", "proxy", "url", "protocol"})
        url = checker.value(raw, section, "url", str, None)
        if url is not None:
            try:
                check_url(url, what="url")
            except ValueError as exc:
                checker.fail(section, "url", str(exc))
        if name not in RECIPES and not url:
            checker.fail("providers", name, f'is not a known provider ({", ".join(sorted(RECIPES))}); add url = "..."')
        base_url = checker.value(raw, section, "base_url", str, None)
        if base_url is not None:
            try:
                base_url = normalize_origin(base_url)
            except ValueError as exc:
                checker.fail(section, "base_url", str(exc))
        interval = checker.value(raw, section, "refresh_interval", (int, float), None)
        if interval is not None and interval <= 0:
            checker.fail(section, "refresh_interval", "must be a positive number of seconds")
        protocol = checker.value(raw, section, "protocol", str, None)
        if protocol is not None and protocol not in PROVIDER_PROTOCOLS.get(name, ()):
            known = PROVIDER_PROTOCOLS.get(name)
            checker.fail(
                section,
                "protocol",
                f"must be one of {', '.join(known)}" if known else "is not a setting of this provider (one protocol)",
            )
        providers[name] = ProviderConfig(
            name=name,
            base_url=base_url,
            refresh_interval=float(interval) if interval is not None else None,
            proxy=checker.value(raw, section, "proxy", str, None),
            url=url,
            protocol=protocol,
        )
    return Config(
        daemon=daemon, browser=browser, server=server, cache=cache, providers=MappingProxyType(providers), path=path
    )


def _export_targets(checker: _Checker, raw: Any) -> tuple[ExportTarget, ...]:
    from cache._export import FORMATS

    example = 'must be a list of tables, e.g. export = [{ dir = "~/exports", format = "har" }]'
    if not isinstance(raw, list):
        checker.fail("daemon", "export", example)
    targets = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"dir", "format"}:
            checker.fail("daemon", "export", example)
        if not isinstance(entry["dir"], str) or not entry["dir"].strip():
            checker.fail("daemon", "export", "dir must be a directory path")
        if entry["format"] not in FORMATS:
            checker.fail("daemon", "export", f"format must be one of {', '.join(FORMATS)}, not {entry['format']!r}")
        targets.append(ExportTarget(dir=Path(entry["dir"]).expanduser(), format=entry["format"]))
    return tuple(targets)


class _Checker:
    """Validates values and builds errors that name the key and its line."""

    def __init__(self, text: str, where: str) -> None:
        self._lines = text.splitlines()
        self._where = where

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail("", key, "must be a table")
        return value

    def only(self, data: dict[str, Any], section: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                self.fail(section, key, f"is not a known key (expected one of {', '.join(sorted(allowed))})")

    def value(self, data: dict[str, Any], section: str, key: str, kind: Any, default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = " or ".join(k.__name__.replace("str", "string").replace("int", "integer") for k in kinds)
            self.fail(section, key, f"must be a {names}, not {value!r}")
        return value

    def fail(self, section: str, key: str, problem: str) -> Any:
        dotted = f"{section}.{key}" if section else key
        line = self._line_of(section, key)
        at = f" (line {line})" if line else ""
        raise ConfigError(f"{self._where}{at}: {dotted} {problem}", path=self._where, key=dotted, line=line)

    def _line_of(self, section: str, key: str) -> int | None:
        # tomllib keeps no positions, so find the key under its [section] header in the text.
        current = ""
        header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number, line in enumerate(self._lines, 1):
            found = header.match(line)
            if found:
                current = found.group(1).replace('"', "").replace("'", "")
                if not section and current.split(".", 1)[0] == key:
                    return number
                if current == f"{section}.{key}":
                    return number
                continue
            if current == section and key_re.match(line):
                return number
        return None
