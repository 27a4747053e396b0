"""Where geounet keeps things of its own: the user data folder and the default model.

Example:
    Not run as a doctest: the folder depends on ``GEOUNET_HOME`` and ``XDG_DATA_HOME``.

    >>> from geounet.core.paths import user_data_dir
    >>> user_data_dir().name                                     # doctest: +SKIP
    'geounet'
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_model_dir", "demo_model_dir", "user_data_dir"]


def user_data_dir() -> Path:
    """``$GEOUNET_HOME``, else ``$XDG_DATA_HOME/geounet``, else ``~/.local/share/geounet``.

    On Windows ``%LOCALAPPDATA%\\geounet`` is used when ``GEOUNET_HOME`` is unset.
    """
    if os.environ.get("GEOUNET_HOME"):
        return Path(os.environ["GEOUNET_HOME"]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "geounet"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "geounet"


def demo_model_dir() -> Path:
    """The folder where ``geounet demo`` keeps the model it trained."""
    return user_data_dir() / "models" / "demo"


def default_model_dir() -> Path | None:
    """The model ``geounet classify`` uses without ``--model``.

    ``$GEOUNET_MODEL``, else the demo model if it exists, else None.
    """
    env = os.environ.get("GEOUNET_MODEL")
    if env:
        return Path(env).expanduser()
    demo = demo_model_dir()
    return demo if (demo / "geounet.json").exists() else None
