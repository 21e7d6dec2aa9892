"""What ``harvest serve`` runs with: one frozen dataclass, built from the config, the flags and the environment.

``ServeSettings.resolve`` is the only place that reads ``$HARVEST_SERVER_TOKEN`` and the token file; the CLI
only forwards its flags.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harvester._config import Config
from harvester._exceptions import ConfigError

from ._limits import Limits

TOKEN_ENV = "HARVEST_SERVER_TOKEN"
DEFAULT_LISTEN = "127.0.0.1:8191"  # FlareSolverr's port, so its clients find us unchanged


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` or ``PORT``) into a host (default 127.0.0.1) and a port.

    Raises:
        ValueError: the port is not a number from 0 to 65535.
    """
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep:
        host, port_text = "", listen.strip()
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen: {listen!r} is not HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as reachable from outside


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """How the server listens and whom it lets in.

    Attributes:
        host, port: where to listen.
        token: the Bearer token every route but ``/``, ``/health`` and ``/healthz`` needs (never in repr).
        no_auth: serve a non-loopback address without a token (``--no-auth``).
        default_provider: bare model ids of the OpenAI gateway go to this provider.
        limits: body size, timeouts and caps.
    """

    host: str = "127.0.0.1"
    port: int = 8191
    token: str | None = field(default=None, repr=False)
    no_auth: bool = False
    default_provider: str | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def loopback(self) -> bool:
        """True when only this machine can reach the server."""
        return is_loopback(self.host)

    @classmethod
    def resolve(
        cls,
        config: Config,
        *,
        listen: str | None = None,
        token: str | None = None,
        no_auth: bool = False,
        limits: Limits | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ServeSettings:
        """Settings from the flags, then ``$HARVEST_SERVER_TOKEN``, then ``[server]`` in the config.

        Raises:
            ConfigError: a bad listen address, an unreadable or empty token file, or a non-loopback address
                without a token and without ``no_auth``.
        """
        env = os.environ if environ is None else environ
        section = config.server
        listen = listen or section.listen or DEFAULT_LISTEN
        try:
            host, port = parse_listen(listen)
        except ValueError as exc:
            raise ConfigError(str(exc), key="server.listen") from None
        secret = token or env.get(TOKEN_ENV) or section.token or _read_token_file(section.token_file)
        settings = cls(
            host=host,
            port=port,
            token=secret or None,
            no_auth=no_auth,
            default_provider=section.default_provider,
            limits=limits or Limits(),
        )
        if not settings.token and not settings.loopback and not no_auth:
            raise ConfigError(
                f"refusing to serve {host}:{port} without a token: set {TOKEN_ENV}, [server] token or token_file, "
                "or pass --no-auth to serve it to anyone who can reach it",
                key="server.token",
            )
        return settings


def _read_token_file(path: str | None) -> str | None:
    if not path:
        return None
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read [server] token_file {file}: {exc.strerror}", key="server.token_file") from None
    if not text:
        raise ConfigError(f"[server] token_file {file} is empty", key="server.token_file")
    return text
