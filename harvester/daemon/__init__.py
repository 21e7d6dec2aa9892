"""The refresh daemon behind ``harvest daemon``: keeps every configured session fresh in the shared cache.

>>> from harvester.daemon import Daemon, DaemonSettings
>>> settings = DaemonSettings.from_config(load_config())
>>> exit_code = await Daemon(settings, cache=AuthCache.open()).serve()

The pure parts (the schedule, the status report, redaction) are plain functions beside the driver loop.
"""

from __future__ import annotations

from ._daemon import Daemon, HarvesterFactory, HarvesterLike, SettingsLoader, default_harvester_factory
from ._logging import KeyValueFormatter, RedactingFilter, SecretRegistry, configure_logging, redact
from ._schedule import SchedulePolicy, backoff_delay, next_refresh
from ._settings import DaemonSettings, ProviderSpec
from ._status import ProviderState, build_report, read_status, status_path

__all__ = [
    "Daemon",
    "DaemonSettings",
    "HarvesterFactory",
    "HarvesterLike",
    "KeyValueFormatter",
    "ProviderSpec",
    "ProviderState",
    "RedactingFilter",
    "SchedulePolicy",
    "SecretRegistry",
    "SettingsLoader",
    "backoff_delay",
    "build_report",
    "configure_logging",
    "default_harvester_factory",
    "next_refresh",
    "read_status",
    "redact",
    "status_path",
]
