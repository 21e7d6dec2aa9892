"""Run ``harvest daemon`` as a real subprocess and observe what a user would: logs, exit, processes, files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
HARVEST = str(Path(sys.executable).with_name("harvest"))


def write_config(path: Path, providers: Mapping[str, str], **daemon: Any) -> Path:
    """Write a daemon config: ``[daemon]`` keys from ``daemon``, one ``[providers.NAME]`` per base URL."""
    lines = ["[daemon]"]
    for key, value in daemon.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    for name, base_url in providers.items():
        lines += ["", f"[providers.{name}]", f'base_url = "{base_url}"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def chromium_pids(tmpdir: str) -> list[int]:
    """Pids of live (not zombie) browser processes of a daemon started with ``TMPDIR=tmpdir``.

    A process counts if its command line mentions the directory (``--user-data-dir`` of every helper) or
    its environment has ``TMPDIR`` under it (inherited by helpers such as crashpad handlers, whose command
    lines do not mention the profile).
    """
    env_marker, path_marker = f"TMPDIR={tmpdir}".encode(), str(tmpdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = path_marker in cmdline or any(item.startswith(env_marker) for item in environ)
        if ours and b"chrom" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class DaemonProc:
    """One ``harvest daemon`` subprocess with its own TMPDIR, so its browsers and profiles are countable."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, tmpdir: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.tmpdir = tmpdir

    def log(self) -> str:
        """Everything the daemon has written to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail with the daemon's log if it never is."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-6000:]}")
            time.sleep(0.05)

    def wait_log(self, needle: str, timeout: float = 60.0, count: int = 1) -> None:
        """Wait until ``needle`` appears ``count`` times in the log."""
        self.wait_for(lambda: self.log().count(needle) >= count, timeout, f"{needle!r} x{count}")

    def status(self) -> dict[str, Any]:
        """``harvest status --json``, run as a separate process."""
        out = subprocess.run(
            [HARVEST, "status", "--json"], capture_output=True, check=True, timeout=30, cwd=ROOT
        ).stdout
        report: dict[str, Any] = orjson.loads(out)
        return report

    def send(self, sig: int) -> None:
        """Send a signal to the daemon process."""
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, float]:
        """Signal the daemon and wait; return its exit code and how long it took."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def chromium(self) -> list[int]:
        """Chromium processes launched by this daemon that are still alive."""
        return chromium_pids(str(self.tmpdir))

    def profiles(self) -> list[Path]:
        """Temp browser profiles this daemon left in its TMPDIR."""
        return sorted(self.tmpdir.glob("harvest-profile-*"))


@contextlib.contextmanager
def run_daemon(
    home: Path,
    config: Path,
    *,
    tmpdir: Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[DaemonProc]:
    """Start ``harvest daemon --config CONFIG`` with ``TMPDIR=tmpdir``; on exit make sure it and its browsers
    are gone."""
    log_path = home / f"daemon-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [HARVEST, "daemon", "--config", str(config), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
            start_new_session=True,
        )
    daemon = DaemonProc(proc, log_path, tmpdir)
    try:
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # Last resort, so a failing test never leaves a browser behind: only pids of this daemon's browsers.
        for pid in daemon.chromium():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
