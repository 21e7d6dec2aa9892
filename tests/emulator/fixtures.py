"""Pytest fixtures for the provider emulator and the test proxy (loaded by tests/conftest.py through
`pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._proxy import ProxyThread
from ._server import EmulatorThread
from ._state import EmulatorConfig


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., EmulatorThread]]:
    """Start emulators with given knobs, e.g. `emulator_factory(variant="blocked")`; all stop at teardown."""
    started: list[EmulatorThread] = []

    def make(**knobs: Any) -> EmulatorThread:
        emu = EmulatorThread(EmulatorConfig().with_knobs(knobs))
        started.append(emu)
        emu.start()
        return emu

    yield make
    for emu in reversed(started):
        emu.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorThread]) -> EmulatorThread:
    """A fresh emulator with default knobs on a background thread; `.url`, `.configure(...)`, `.stats`."""
    return emulator_factory()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., ProxyThread]]:
    """Start authenticating proxies, e.g. `proxy_factory(password="other")`; all stop at teardown."""
    started: list[ProxyThread] = []

    def make(**options: Any) -> ProxyThread:
        proxy = ProxyThread(**options)
        started.append(proxy)
        proxy.start()
        return proxy

    yield make
    for proxy in reversed(started):
        proxy.stop()


@pytest.fixture
def auth_proxy(proxy_factory: Callable[..., ProxyThread]) -> ProxyThread:
    """An authenticating forward proxy on a background thread; `.url`, `.auth_url`, `.url_for(...)`, `.stats`."""
    return proxy_factory()
