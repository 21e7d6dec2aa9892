"""Reap the Chromium helpers that are re-parented to us, whenever they exit.

We make ourselves a child subreaper (``_browser._become_subreaper``), so when a browser's main process dies its
helpers (zygotes, renderers, the double-forked crash handlers) become our children instead of init's, and
nobody else will ever ``wait()`` for them. ``BrowserProcess.stop`` reaps what has exited by then; a helper
that exits later (an interrupt during launch, a browser killed from outside) would stay a zombie until we
exit. So while any browser of ours runs, and briefly after the last one stops, a thread reaps them as they
exit.

This is the one piece of process-wide state in the harvester, because being a subreaper is process-wide:
the main processes we spawned are waited for by asyncio, so their pids are registered here and left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

# Seconds between looks for exited helpers while a browser runs. A zombie costs only its process-table entry
# until then, and each look reads a /proc file per thread and per child: at 0.2 s, an idle `harvest serve`
# with its browser up spent 4 ms of CPU a second on it (0.8 at 1 s).
INTERVAL = 1.0
LINGER = 5.0  # seconds the thread keeps looking after the last browser stopped (helpers exit late)


class _Reaper:
    def __init__(self) -> None:
        # Protects the fields below; the thread and the event loop's thread both use them.
        self._lock = threading.Lock()
        self._spawned: set[int] = set()  # main browser pids: asyncio waits for these, never us
        # Process groups of our browsers (each main pid leads its own) -> when it stopped (None: running).
        # Only their members are ours to reap: a Chromium someone else in this process spawned is not.
        self._groups: dict[int, float | None] = {}
        self._running = 0  # browsers started and not yet stopped
        self._last_stop = 0.0
        self._thread: threading.Thread | None = None

    def started(self, pid: int) -> None:
        """A browser we spawned (``pid``, which asyncio reaps) is up: reap its orphaned helpers from now on."""
        if not sys.platform.startswith("linux"):
            return
        with self._lock:
            self._spawned.add(pid)
            self._groups[pid] = None
            self._running += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="harvest-reaper", daemon=True)
                self._thread.start()

    def stopped(self, pid: int) -> None:
        """The browser ``pid`` is stopped and its main process reaped."""
        if not sys.platform.startswith("linux"):
            return
        with self._lock:
            if pid in self._spawned:
                self._spawned.discard(pid)
                self._running = max(0, self._running - 1)
                self._last_stop = time.monotonic()
                self._groups[pid] = self._last_stop
            # Forget groups stopped long ago, so a daemon's table stays small for weeks.
            for group, when in list(self._groups.items()):
                if when is not None and time.monotonic() - when > 10 * LINGER:
                    del self._groups[group]

    def reap_now(self) -> int:
        """Reap every exited helper that is our child; return how many."""
        if not sys.platform.startswith("linux"):
            return 0
        with self._lock:
            spawned, groups = set(self._spawned), set(self._groups)
        count = 0
        for pid, group, comm in exited_children():
            # A crash handler is never anyone's direct child (it double-forks into its own session).
            ours = comm.startswith("chrome_crashpad") or group in groups
            if pid in spawned or not ours:
                continue
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                count += bool(done)
        return count

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            self.reap_now()
            with self._lock:
                if self._running == 0 and time.monotonic() - self._last_stop > LINGER:
                    self._thread = None
                    return


def our_children() -> list[tuple[int, str, int, str]]:
    """Our child processes, read from ``/proc``: ``(pid, state, process group, command name)`` each.

    The kernel lists each thread's children in ``/proc/self/task/TID/children``; reading those and then our few
    children's ``stat`` costs a handful of reads, where a scan of every ``/proc/PID/stat`` on the machine cost
    milliseconds five times a second while a browser ran (2% of a core in ``harvest serve``, measured with
    ~140 processes). The scan stays as the fallback for a kernel without the children files.
    """
    pids = _listed_children()
    if pids is None:
        pids = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    me = str(os.getpid())
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        comm_end = stat.rfind(")")
        fields = stat[comm_end + 2 :].split()
        if len(fields) > 2 and fields[1] == me:
            found.append((int(pid), fields[0], int(fields[2]), stat[stat.find("(") + 1 : comm_end]))
    return found


def _listed_children() -> list[str] | None:
    """The pids in our threads' ``children`` files, or None when the kernel has none (CONFIG_PROC_CHILDREN)."""
    pids: list[str] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    listed = False
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as handle:
                pids += handle.read().decode().split()
            listed = True
        except FileNotFoundError:
            if not os.path.exists(f"/proc/self/task/{task}"):
                continue  # a thread that ended meanwhile
            return None
        except OSError:
            continue
    return pids if listed else None


def exited_children() -> list[tuple[int, int, str]]:
    """Our children that have exited (zombies): ``(pid, process group, command name)`` each."""
    return [(pid, group, comm) for pid, state, group, comm in our_children() if state == "Z"]


#: The process-wide reaper (see the module docstring for why this one is global).
REAPER = _Reaper()
