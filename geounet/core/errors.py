"""The error model of geounet.

Every error raised for bad input derives from :class:`GeounetError` *and* from the builtin
exception a Python user would expect (``ValueError``, ``FileNotFoundError``, ...), so that both
``except GeounetError`` and ``except ValueError`` work. Messages name the file, the problem,
what is allowed and the fix. The command line turns any ``GeounetError`` into one line on
stderr and exit code 2.

Example:
    >>> from geounet.core.errors import InvalidRasterError
    >>> isinstance(InvalidRasterError("x"), ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "BandMismatchError",
    "CRSMismatchError",
    "DependencyNotFoundError",
    "GeounetError",
    "InputNotFoundError",
    "InvalidParameterError",
    "InvalidRasterError",
    "LabelError",
    "MissingCRSError",
    "ModelFileError",
    "NoChipsError",
    "OutputExistsError",
    "OutputLockedError",
    "OutputNotWritableError",
]


class GeounetError(Exception):
    """Root of every error geounet raises on purpose."""


class InvalidParameterError(GeounetError, ValueError):
    """A parameter has a value that is not allowed."""


class InputNotFoundError(GeounetError, FileNotFoundError):
    """An input file or folder does not exist."""


class InvalidRasterError(GeounetError, ValueError):
    """A file is not a usable raster (unreadable, no bands, unsupported data type...)."""


class MissingCRSError(InvalidRasterError):
    """A raster has no coordinate reference system and pixel coordinates were not allowed."""


class CRSMismatchError(GeounetError, ValueError):
    """Two datasets do not share a coordinate system or do not overlap."""


class BandMismatchError(GeounetError, ValueError):
    """The number or order of bands differs from what is expected."""


class LabelError(GeounetError, ValueError):
    """Labels are missing, unreadable or inconsistent with the declared classes."""


class NoChipsError(GeounetError, ValueError):
    """Chipping produced no usable training chip."""


class ModelFileError(GeounetError, ValueError):
    """A model file or folder is missing, corrupt, of an unknown schema or unsafe (pickle)."""


class OutputExistsError(GeounetError, FileExistsError):
    """The output exists and overwriting was not asked for."""


class OutputNotWritableError(GeounetError, PermissionError):
    """The output cannot be written (read-only folder, disk full, no permission)."""


class OutputLockedError(GeounetError, FileExistsError):
    """Another run is writing the same output right now (its lock file exists)."""


class DependencyNotFoundError(GeounetError, ImportError):
    """An optional dependency is not installed; the message gives the exact pip command."""
