"""What the daemon needs from the config, as one frozen dataclass.

``harvester._config.load_config`` owns the TOML file (and its errors, which name the key and the line);
``DaemonSettings.from_config`` only picks the daemon's view out of it.

The daemon-only knobs that tests (and impatient operators) turn down come from the environment when set
(as ``$HARVEST_BROWSER`` wins over ``[browser] path``), else from the ``[daemon]`` table, else the
production defaults:

* ``min_margin`` / ``$HARVEST_DAEMON_MIN_MARGIN`` (60 s): refresh at least this long before expiry;
* ``backoff_base`` / ``$HARVEST_DAEMON_BACKOFF_BASE`` (30 s): the first retry after a failure;
* ``backoff_cap`` / ``$HARVEST_DAEMON_BACKOFF_CAP`` (1800 s): the longest wait between retries;
* ``shutdown_timeout`` / ``$HARVEST_DAEMON_SHUTDOWN_TIMEOUT`` (4 s): in-flight harvests' grace on SIGTERM;
* ``browser_nice`` / ``$HARVEST_DAEMON_BROWSER_NICE`` (0): CPU niceness added to the daemon's Chromium (0 to 19;
  Linux), which Chromium cannot raise any thread above.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harvester._driver import Backend

from ._schedule import SchedulePolicy


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One ``[providers.NAME]`` table: where and how to harvest it."""

    name: str
    base_url: str | None = None
    refresh_interval: float | None = None
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    url: str | None = None  # a site with no recipe (as `harvest --url`)


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The daemon's settings: the ``[daemon]`` table and the providers to keep fresh."""

    backend: Backend | None = None
    max_concurrent: int = 2
    browser_idle_close: float = 60.0
    #: CPU niceness added to the daemon's Chromium, which it cannot raise any thread above (run as root, it raised its
    #: IO, compositor and GPU threads to -8, above the cache's readers on the host). More (up to 19) lets the host's
    #: readers and clients go first during a browser run, at the cost of slower refreshes on a busy host.
    browser_nice: int = 0
    listen: str | None = None
    harvest_timeout: float = 30.0
    shutdown_timeout: float = 4.0  # in-flight harvests get this long after SIGTERM; the rest is teardown
    policy: SchedulePolicy = field(default_factory=SchedulePolicy)
    providers: Mapping[str, ProviderSpec] = field(default_factory=lambda: MappingProxyType({}))
    #: ``[daemon] export``: (directory, format) pairs rewritten after every refresh.
    exports: tuple[Any, ...] = ()
    #: The whole loaded config, handed to the ``Harvester`` (browser path); not compared on reload.
    config: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: Any, environ: Mapping[str, str] | None = None) -> DaemonSettings:
        """Build the daemon's settings from the object ``load_config`` returns (and the tuning env vars).

        Raises:
            ValueError: a tuning variable is not a non-negative number (the message names it).
        """
        daemon = getattr(config, "daemon", None)
        env = os.environ if environ is None else environ

        def opt(name: str, default: Any) -> Any:
            # The config always carries these keys (with defaults), so the environment has to be asked first
            # or it could never turn them down.
            value = _env_seconds(env, _ENV_KNOBS[name]) if name in _ENV_KNOBS else None
            if value is None and daemon is not None:
                value = getattr(daemon, name, None)
            return default if value is None else value

        base = SchedulePolicy()
        policy = SchedulePolicy(
            min_margin=float(opt("min_margin", base.min_margin)),
            backoff_base=float(opt("backoff_base", base.backoff_base)),
            backoff_cap=float(opt("backoff_cap", base.backoff_cap)),
        )
        raw_providers: Mapping[str, Any] = getattr(config, "providers", None) or {}
        base_url_of = getattr(config, "base_url", None)  # $HARVEST_<NAME>_BASE_URL wins over the file
        providers = {
            name: ProviderSpec(
                name=name,
                base_url=base_url_of(name) if callable(base_url_of) else getattr(spec, "base_url", None),
                refresh_interval=_float_or_none(getattr(spec, "refresh_interval", None)),
                proxy=getattr(spec, "proxy", None),
                url=getattr(spec, "url", None),
            )
            for name, spec in sorted(raw_providers.items())
        }
        return cls(
            backend=opt("backend", None),
            # Default: every provider at once (each a tab of the one browser), so due jobs never queue.
            max_concurrent=int(opt("max_concurrent", None) or max(1, len(providers))),
            browser_idle_close=float(opt("browser_idle_close", 60.0)),
            browser_nice=_browser_nice(env, opt("browser_nice", 0)),
            listen=opt("listen", None),
            harvest_timeout=float(opt("timeout", 30.0)),
            shutdown_timeout=float(opt("shutdown_timeout", 4.0)),
            policy=policy,
            exports=tuple(opt("export", ())),
            providers=MappingProxyType(providers),
            config=config,
        )

    def restart_needed(self, other: DaemonSettings) -> list[str]:
        """Return the ``[daemon]`` keys that differ from ``other`` and only apply after a restart."""
        keys = ("backend", "max_concurrent", "listen", "harvest_timeout", "browser_nice")
        return [key for key in keys if getattr(self, key) != getattr(other, key)]


_ENV_KNOBS = {
    "min_margin": "HARVEST_DAEMON_MIN_MARGIN",
    "backoff_base": "HARVEST_DAEMON_BACKOFF_BASE",
    "backoff_cap": "HARVEST_DAEMON_BACKOFF_CAP",
    "shutdown_timeout": "HARVEST_DAEMON_SHUTDOWN_TIMEOUT",
}


def _browser_nice(environ: Mapping[str, str], configured: Any) -> int:
    """``$HARVEST_DAEMON_BROWSER_NICE`` if set (an integer from 0 to 19), else the config's value."""
    text = environ.get("HARVEST_DAEMON_BROWSER_NICE", "").strip()
    if not text:
        return int(configured)
    if not text.isdigit() or not 0 <= int(text) <= 19:
        raise ValueError(f"$HARVEST_DAEMON_BROWSER_NICE: {text!r} must be an integer from 0 to 19")
    return int(text)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _env_seconds(environ: Mapping[str, str], name: str) -> float | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"${name}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"${name}: {text!r} must be a non-negative number of seconds")
    return value
