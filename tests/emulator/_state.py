"""Knobs, counters and secrets of one emulator: the only mutable thing the routes share.

The state is touched from the server's event loop and, through the pytest fixture, from the test thread, so
every access goes through one `threading.Lock`. Nothing here does I/O.

Every store of issued secrets is bounded: expired nonces and clearances are dropped whenever a new one is
issued, and each store keeps at most `MAX_ENTRIES` entries (the oldest go first), so a soak that harvests for
hours does not grow the emulator's memory.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Variant = Literal["normal", "blocked", "interactive", "login-required"]
VARIANTS: tuple[str, ...] = get_args(Variant)

# Nonces handed out in challenge pages stay answerable this long; a browser that sits longer reloads anyway.
_NONCE_TTL = 600.0
# The most entries any store of issued secrets keeps (the oldest are forgotten first). Far above what a test
# issues, so only a long soak ever reaches it; read at call time, so a test can lower it.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class EmulatorConfig:
    """Every knob of the emulator, with its default; `Emulator.configure(**knobs)` replaces fields."""

    think_ms: float = 300.0
    clearance_ttl: float = 3600.0
    variant: Variant = "normal"
    require_clearance: bool = True
    fail_next: int = 0
    fail_status: int = 503
    rate_limit_next: int = 0
    retry_after: float = 1.0
    cut_stream: bool = False
    malformed_event: bool = False
    error_event: bool = False
    drip_ms: float = 0.0
    challenge_api: bool = False
    stream_chunks: int | None = None
    chunk_text: str = "tok "
    unknown_frames: bool = False
    first_frame_ms: float = 0.0
    fragment_frames: bool = False

    def with_knobs(self, knobs: Mapping[str, Any]) -> EmulatorConfig:
        """Return a copy with `knobs` applied, coerced to each field's type.

        Raises:
            ValueError: an unknown knob name or a value of the wrong kind.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(knobs) - names)
        if unknown:
            raise ValueError(f"unknown emulator knob(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in knobs.items()})

    def to_json(self) -> dict[str, Any]:
        """The knobs as a JSON-ready dict (what `GET /__emulator__/config` answers)."""
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any) -> Any:
    """Check and convert one knob value; JSON gives ints for floats and the CLI gives strings."""
    default = getattr(EmulatorConfig, name)
    if name == "variant":
        if value not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {value!r}")
        return value
    if name == "stream_chunks":
        if value is None:
            return None
        default = 0
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        if not isinstance(value, bool | int):
            raise ValueError(f"{name} must be a bool, not {value!r}")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{name} must be an int, not {value!r}")
        number = int(value)
        if number < 0:
            raise ValueError(f"{name} must be >= 0, not {number}")
        return number
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{name} must be a number, not {value!r}")
        real = float(value)
        if real < 0:
            raise ValueError(f"{name} must be >= 0, not {real}")
        return real
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {value!r}")
    return value


@dataclass
class _Clearance:
    """One issued `cf_clearance`: who answered and until when (monotonic seconds)."""

    user_agent: str
    expires: float


@dataclass
class _Nonce:
    """One challenge page's nonce: until when it is answerable, and whether a person completed its widget."""

    expires: float
    interactive: bool = False
    solved_by_person: bool = False


@dataclass
class State:
    """The live knobs, issued secrets and counters of one emulator."""

    initial: EmulatorConfig = field(default_factory=EmulatorConfig)
    config: EmulatorConfig = field(init=False)
    # Protects every field below: routes run on the loop thread, the fixture calls in from the test thread.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _nonces: dict[str, _Nonce] = field(default_factory=dict, repr=False)
    _clearances: dict[str, _Clearance] = field(default_factory=dict, repr=False)
    _api_keys: dict[str, str] = field(default_factory=dict, repr=False)  # holder -> key, oldest first
    _issued_keys: set[str] = field(default_factory=set, repr=False)  # the same keys, for O(1) checks
    _logins: dict[str, str] = field(default_factory=dict, repr=False)
    _images: dict[str, None] = field(default_factory=dict, repr=False)  # an insertion-ordered set
    _person_username: str | None = field(default=None, repr=False)
    _stats: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.config = self.initial
        self._stats = _fresh_stats()

    # -- knobs ---------------------------------------------------------------------------------------------

    def configure(self, knobs: Mapping[str, Any]) -> EmulatorConfig:
        """Apply knobs (validated first, so a bad call changes nothing) and return the new config."""
        with self._lock:
            self.config = self.config.with_knobs(knobs)
            return self.config

    def reset(self) -> None:
        """Restore the start-up knobs and forget every secret, fault and counter."""
        with self._lock:
            self.config = self.initial
            self._nonces.clear()
            self._clearances.clear()
            self._api_keys.clear()
            self._issued_keys.clear()
            self._logins.clear()
            self._images.clear()
            self._person_username = None
            self._stats = _fresh_stats()

    def revoke(self) -> None:
        """Invalidate every clearance and issued API key, as when Cloudflare rotates its secrets."""
        with self._lock:
            self._clearances.clear()
            self._api_keys.clear()
            self._issued_keys.clear()

    def sizes(self) -> dict[str, int]:
        """How many entries each store of issued secrets holds (to check that a long run stays bounded)."""
        with self._lock:
            return {
                "nonces": len(self._nonces),
                "clearances": len(self._clearances),
                "api_keys": len(self._api_keys),
                "logins": len(self._logins),
                "images": len(self._images),
            }

    def take_fault(self) -> tuple[Literal["fail", "rate_limit"], EmulatorConfig] | None:
        """Consume one pending `fail_next` or `rate_limit_next`, if any, and say which."""
        with self._lock:
            cfg = self.config
            if cfg.fail_next > 0:
                self.config = dataclasses.replace(cfg, fail_next=cfg.fail_next - 1)
                self._stats["faults_injected"] += 1
                return "fail", cfg
            if cfg.rate_limit_next > 0:
                self.config = dataclasses.replace(cfg, rate_limit_next=cfg.rate_limit_next - 1)
                self._stats["faults_injected"] += 1
                return "rate_limit", cfg
            return None

    # -- challenge -----------------------------------------------------------------------------------------

    def new_nonce(self, *, interactive: bool = False) -> str:
        """Issue a nonce for one challenge page, dropping ones nobody answered in time."""
        nonce = secrets.token_hex(16)
        now = time.monotonic()
        with self._lock:
            for old in [n for n, entry in self._nonces.items() if entry.expires < now]:
                del self._nonces[old]
            self._nonces[nonce] = _Nonce(now + _NONCE_TTL, interactive=interactive)
            _trim(self._nonces)
            self._stats["challenge_pages"] += 1
        return nonce

    def take_nonce(self, nonce: str) -> bool:
        """Consume a nonce; False if it was never issued, already used or too old."""
        with self._lock:
            entry = self._nonces.pop(nonce, None)
        return entry is not None and entry.expires >= time.monotonic()

    def person_solve(self) -> int:
        """A person completes the widget of every interactive challenge page now open; returns how many.

        Test-only: it stands in for the human who ticks the box in a visible browser. The page learns of it
        through :meth:`person_solved` and then posts its answer as after a real click.
        """
        now = time.monotonic()
        with self._lock:
            pending = [e for e in self._nonces.values() if e.interactive and e.expires >= now]
            for entry in pending:
                entry.solved_by_person = True
            return len(pending)

    def person_solved(self, nonce: str) -> bool:
        """Whether a person completed this challenge page's widget (the page polls this)."""
        with self._lock:
            self._stats["person_polls"] += 1
            entry = self._nonces.get(nonce)
            return entry is not None and entry.solved_by_person

    def person_sign_in(self, username: str) -> None:
        """A person will sign in as `username` in the next page that waits for one (test-only, like above)."""
        with self._lock:
            self._person_username = username

    def person_signing_in(self) -> str | None:
        """The username a person is about to sign in with, or None (login pages poll this)."""
        with self._lock:
            self._stats["person_polls"] += 1
            return self._person_username

    def issue_clearance(self, user_agent: str) -> str:
        """Mint a 43-character `cf_clearance` bound to `user_agent`, dropping expired ones."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for old in [t for t, found in self._clearances.items() if found.expires < now]:
                del self._clearances[old]
            self._clearances[token] = _Clearance(user_agent, now + self.config.clearance_ttl)
            _trim(self._clearances)
            self._stats["clearances_issued"] += 1
            self._stats["clearance_user_agent"] = user_agent
        return token

    def clearance_valid(self, token: str | None, user_agent: str) -> bool:
        """True if `token` was issued to this exact User-Agent and has not expired or been revoked."""
        if not token:
            return False
        with self._lock:
            found = self._clearances.get(token)
            if found is not None and found.expires < time.monotonic():
                del self._clearances[token]
                found = None
        return found is not None and found.user_agent == user_agent

    # -- sessions, keys, logins, images --------------------------------------------------------------------

    def api_key_for(self, holder: str) -> str:
        """The Cerebras demo key of one clearance holder, minted on first ask and then remembered."""
        with self._lock:
            self._stats["session_requests"] += 1
            key = self._api_keys.get(holder)
            if key is None:
                key = self._api_keys[holder] = "csk-" + secrets.token_hex(24)
                self._issued_keys.add(key)
                for _, dropped in _trim(self._api_keys):
                    self._issued_keys.discard(dropped)
                self._stats["api_keys_issued"] += 1
            return key

    def count_session_request(self) -> None:
        """Count a session request that got no key (login missing)."""
        with self._lock:
            self._stats["session_requests"] += 1

    def api_key_valid(self, key: str) -> bool:
        """True if `key` was issued and not revoked."""
        with self._lock:
            return key in self._issued_keys

    def login(self, username: str) -> str:
        """Open a login session and return its `authjs.session-token`."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._logins[token] = username
            _trim(self._logins)
            if username == self._person_username:
                self._person_username = None  # that person has signed in; later pages wait for another
            self._stats["logins"] += 1
        return token

    def login_user(self, token: str | None) -> str | None:
        """The username behind a session token, or None."""
        if not token:
            return None
        with self._lock:
            return self._logins.get(token)

    def add_image(self) -> str:
        """Register a generated image id so `GET /static/img/{id}.png` serves it."""
        image_id = secrets.token_hex(8)
        with self._lock:
            self._images[image_id] = None
            _trim(self._images)
        return image_id

    def has_image(self, image_id: str) -> bool:
        """True if the image id was handed out since the last reset."""
        with self._lock:
            return image_id in self._images

    # -- stats ---------------------------------------------------------------------------------------------

    def record_api_request(self, path: str, headers: Mapping[str, str]) -> None:
        """Count an API request and keep its headers (lower-case names) for assertions."""
        lowered = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            per_path = self._stats["api_requests"]
            per_path[path] = per_path.get(path, 0) + 1
            self._stats["api_requests_total"] += 1
            self._stats["last_headers"] = lowered
            self._stats["last_user_agent"] = lowered.get("user-agent")

    def agent_socket(self, *, opened: bool) -> None:
        """Count an agent socket opening (upgrade accepted) or closing."""
        with self._lock:
            if opened:
                self._stats["agent_sockets_opened"] += 1
            self._stats["agent_sockets_open"] += 1 if opened else -1

    def record_agent_frames(self, kinds: list[str]) -> None:
        """Keep the frame types a socket sent up to its chat request, in order."""
        with self._lock:
            self._stats["agent_frames"] = list(kinds)

    def bump(self, counter: str) -> None:
        """Add one to a plain counter in the stats."""
        with self._lock:
            self._stats[counter] += 1

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, safe to keep and compare."""
        with self._lock:
            snap = dict(self._stats)
            snap["api_requests"] = dict(snap["api_requests"])
            if snap["last_headers"] is not None:
                snap["last_headers"] = dict(snap["last_headers"])
            return snap


def _trim(store: dict[str, Any]) -> list[tuple[str, Any]]:
    """Forget the oldest entries of `store` beyond `MAX_ENTRIES`; return what was dropped."""
    dropped = []
    while len(store) > MAX_ENTRIES:
        oldest = next(iter(store))
        dropped.append((oldest, store.pop(oldest)))
    return dropped


def _fresh_stats() -> dict[str, Any]:
    """All counters at zero."""
    return {
        "clearances_issued": 0,
        "challenge_pages": 0,
        "blocked_pages": 0,
        "api_requests": {},
        "api_requests_total": 0,
        "session_requests": 0,
        "api_keys_issued": 0,
        "logins": 0,
        "faults_injected": 0,
        "person_polls": 0,
        "last_user_agent": None,
        "last_headers": None,
        "clearance_user_agent": None,
        "agent_sockets_opened": 0,
        "agent_sockets_open": 0,
        "agent_frames": None,
    }
