"""The installed version of geounet."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("geounet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"
