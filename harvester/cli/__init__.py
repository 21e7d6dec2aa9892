"""The ``harvest`` command line.

The click application lives in ``_app`` and is imported on first use of ``main``, so modules here (exit
codes, the click-free ``harvest cache get`` dispatch in ``harvester._entry``) load without click.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from ._app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
