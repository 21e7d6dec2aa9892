"""The reaper's view of our children, read from the kernel's per-thread children lists."""

from __future__ import annotations

import subprocess
import threading
import time

from harvester import _reaper


def test_children_of_every_thread_are_found_without_scanning_proc(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A running child, an exited one (a zombie) and one started from another thread are all listed, with their
    state, and the same as the full /proc scan lists them."""
    running = subprocess.Popen(["sleep", "30"])
    exited = subprocess.Popen(["true"])
    holder: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: holder.append(subprocess.Popen(["sleep", "30"])))
    thread.start()
    thread.join()
    try:
        deadline = time.monotonic() + 10
        while exited.pid not in {pid for pid, state, _, _ in _reaper.our_children() if state == "Z"}:
            assert time.monotonic() < deadline, "the exited child never showed as a zombie"
            time.sleep(0.01)
        listed = _reaper._listed_children()
        assert listed is not None  # this kernel has the children files: the cheap path is the one under test
        found = {pid: (state == "Z", comm) for pid, state, _, comm in _reaper.our_children()}
        assert found[running.pid] == found[holder[0].pid] == (False, "sleep")
        assert found[exited.pid] == (True, "true")
        monkeypatch.setattr(_reaper, "_listed_children", lambda: None)  # a kernel without them: the scan
        assert {pid: (state == "Z", comm) for pid, state, _, comm in _reaper.our_children()} == found
    finally:
        for child in (running, exited, *holder):
            child.kill()
            child.wait()
