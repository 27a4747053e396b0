"""Install geounet's QGIS plugin into a QGIS user profile (``geounet qgis-install``).

The plugin (``qgis/geounet_qgis`` in the source tree) is copied (or linked) into
``<profile>/python/plugins/geounet_qgis``, told which ``geounet`` executable to run (a
``config.json`` beside it: the one of the Python environment that runs this command), and
enabled in the profile's ``QGIS/QGIS3.ini``. QGIS picks it up at its next start.

Example:
    Not run as a doctest: it writes into the user's QGIS profile.

    >>> install_qgis_plugin()  # doctest: +SKIP
    PosixPath('/home/me/.local/share/QGIS/QGIS3/profiles/default/python/plugins/geounet_qgis')
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import sys
from pathlib import Path

from geounet.core.errors import InputNotFoundError, InvalidParameterError
from geounet.core.types import PathLike

__all__ = ["PLUGIN_NAME", "default_profile", "install_qgis_plugin", "plugin_source"]

PLUGIN_NAME = "geounet_qgis"
#: The plugin's Processing setting (Settings > Options > Processing > Providers > geounet), as
#: QGIS stores it in ``QGIS3.ini``.
EXECUTABLE_SETTING = "Configuration\\GEOUNET_EXECUTABLE"


def plugin_source() -> Path:
    """The plugin folder of this geounet's source tree.

    Raises:
        InputNotFoundError: geounet was installed without its ``qgis/`` folder.
    """
    source = Path(__file__).resolve().parents[2] / "qgis" / PLUGIN_NAME
    if not (source / "metadata.txt").is_file():
        raise InputNotFoundError(
            f"{source}: the QGIS plugin is not there; install geounet from its source tree "
            "(pip install -e .) or pass the plugin folder with --source."
        )
    return source


def default_profile() -> Path:
    """The ``default`` QGIS 3 profile folder of this user on this operating system."""
    if sys.platform == "win32":  # pragma: no cover - path convention only
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":  # pragma: no cover
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def _geounet_executable() -> str:
    """The ``geounet`` script of the running Python environment."""
    folder = Path(sys.executable).parent
    for name in ("geounet", "geounet.exe"):
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which("geounet") or "geounet"


def _check_profile(profile: PathLike | None) -> Path:
    """The profile folder; one given must exist (a typo would make a new, unused profile)."""
    if profile is None:
        return default_profile()
    folder = Path(profile)
    if not folder.is_dir():
        parent = folder.parent
        known = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InvalidParameterError(
            f"{folder}: the QGIS profile {what}"
            + (f"; profiles there: {', '.join(known)}" if known else "")
            + ". Give a profile folder (QGIS: Settings > User Profiles > Open Active Profile "
            "Folder), or create the profile by starting QGIS with it first."
        )
    return folder


def _check_executable(executable: str | None) -> str:
    """The geounet command to configure; one given must exist (a file or a command on PATH)."""
    if executable is None:
        return _geounet_executable()
    if not (Path(executable).is_file() or shutil.which(executable)):
        raise InputNotFoundError(
            f"{executable}: no such geounet executable (neither a file nor a command on PATH). "
            "Give the geounet of the Python environment QGIS should run, e.g. "
            "--executable /path/to/env/bin/geounet (`which geounet` in that environment)."
        )
    return executable


def _enable(profile: Path, executable: str) -> Path:
    """Enable the plugin in the profile's ``QGIS3.ini``; an executable set there follows."""
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # keep QGIS's key case
    if ini.exists():
        parser.read(ini, encoding="utf-8")
    if not parser.has_section("PythonPlugins"):
        parser.add_section("PythonPlugins")
    parser.set("PythonPlugins", PLUGIN_NAME, "true")
    if parser.has_option("Processing", EXECUTABLE_SETTING):  # set by hand or an older install
        parser.set("Processing", EXECUTABLE_SETTING, executable)
    with ini.open("w", encoding="utf-8") as f:
        parser.write(f, space_around_delimiters=False)
    return ini


def install_qgis_plugin(
    profile: PathLike | None = None,
    *,
    link: bool = False,
    executable: str | None = None,
    source: PathLike | None = None,
) -> Path:
    """Copy (or link) the plugin into a QGIS profile, point it at geounet and enable it.

    Args:
        profile: QGIS profile folder (default: :func:`default_profile`).
        link: Symlink instead of copying (for plugin development).
        executable: The geounet command the plugin runs (default: this environment's).
        source: The plugin folder (default: :func:`plugin_source`).

    Returns:
        The installed plugin folder.
    """
    src = Path(source) if source else plugin_source()
    folder, executable = _check_profile(profile), _check_executable(executable)
    target = folder / "python" / "plugins" / PLUGIN_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    if link:
        target.symlink_to(src, target_is_directory=True)
    else:
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "config.json"))
    config = {"executable": executable}
    (target / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _enable(folder, executable)
    return target
