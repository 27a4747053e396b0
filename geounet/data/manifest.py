"""The manifest of a chip folder: build, write, read and check it.

A chip folder is ``images/*.tif`` + ``labels/*.tif`` (georeferenced GeoTIFF chips of the same
names) + ``manifest.json``. Chip paths in the manifest are relative, so the folder can be moved.

Example:
    Not run as a doctest: it needs a chip folder written by ``prepare_data``.

    >>> manifest = load_manifest("chips/")            # doctest: +SKIP
    >>> manifest["chip_size"], len(manifest["chips"])  # doctest: +SKIP
    (256, 120)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geounet.core.classes import ClassSpec, classes_to_json
from geounet.core.errors import InputNotFoundError, InvalidParameterError
from geounet.core.types import PathLike
from geounet.data.chipping import Chip, median_frequency_weights
from geounet.io.raster import RasterInfo

__all__ = [
    "FORMAT",
    "MANIFEST",
    "build_manifest",
    "check_chip_paths",
    "json_nodata",
    "load_manifest",
    "write_manifest",
]

#: Name of the manifest file of a chip folder.
MANIFEST = "manifest.json"
#: Value of the manifest's ``format`` field.
FORMAT = "geounet-chips"


def _counts(chips: Sequence[Chip], split: str | None, n: int) -> list[int]:
    total = np.zeros(n, np.int64)
    for c in chips:
        if split is None or c.split == split:
            total += c.counts
    return [int(v) for v in total]


def _source_nodata(infos: Sequence[RasterInfo], chips: Sequence[Chip]) -> list[float | None]:
    """Each image's nodata as its chips carry it (the override, else the image's own)."""
    found = {c.image: c.nodata for c in chips}
    return [json_nodata(found.get(k, info.nodata)) for k, info in enumerate(infos)]


def build_manifest(
    infos: Sequence[RasterInfo],
    labels: Sequence[Path],
    specs: list[ClassSpec],
    chips: list[Chip],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a chip folder (see :func:`geounet.data.prepare.prepare_data` for the fields).

    Args:
        infos: The source images.
        labels: Their label files.
        specs: The classes.
        chips: All chips (those split as ``"gap"`` are left out).
        extra: Settings to record (bands, stats, chip size, split, dropped counts...).
    """
    from geounet.core.version import __version__

    n = len(specs)
    kept = [c for c in chips if c.split != "gap"]
    info = infos[0]
    by_split = {s: _counts(kept, s, n) for s in ("train", "valid")}
    chip = extra["chip_size"]
    nodata = _source_nodata(infos, chips)
    return {
        "format": FORMAT,
        "version": 1,
        "geounet_version": __version__,
        "classes": classes_to_json(specs),
        **extra,
        "crs": info.crs.to_wkt() if info.crs else None,
        "gsd_m": info.gsd_m if info.crs else None,
        "source_dtype": info.dtype,
        "source_band_count": info.count,
        "source_alpha_band": info.alpha_band,
        "class_pixel_counts": _counts(kept, None, n),
        "class_pixel_counts_by_split": by_split,
        "class_weights": median_frequency_weights(by_split["train"]),
        "chip_counts": {s: sum(c.split == s for c in kept) for s in ("train", "valid")},
        "sources": [
            {"image": str(i.path.resolve()), "label": str(p.resolve()), "nodata": nd}
            for i, p, nd in zip(infos, labels, nodata)
        ],
        "chips": [
            {
                "image": f"images/{c.name}",
                "label": f"labels/{c.name}",
                "split": c.split,
                "source": str(infos[c.image].path.resolve()),
                "bounds": list(c.bounds),
                "window": [c.row, c.col, chip, chip],
            }
            for c in kept
        ],
    }


def json_nodata(nd: float | None) -> float | None:
    """A nodata value JSON can hold (NaN becomes None)."""
    return None if nd is None or (isinstance(nd, float) and math.isnan(nd)) else nd


def write_manifest(folder: PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` into ``folder``; return its path."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1))
    return path


def load_manifest(chip_dir: PathLike) -> dict[str, Any]:
    """Read and check the manifest of a chip folder.

    Raises:
        InputNotFoundError: No such folder or no manifest in it.
        InvalidParameterError: The manifest is not a geounet chip manifest.
    """
    folder = Path(chip_dir)
    path = folder / MANIFEST
    if not path.is_file():
        raise InputNotFoundError(
            f"{folder}: not a chip folder (no {MANIFEST}); give images and labels, or a folder "
            "written by prepare_data(..., out_dir=...)."
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(f"{path}: unreadable manifest ({exc}).") from exc
    needed = ("classes", "bands", "stats", "chip_size", "chips")
    missing = [k for k in needed if k not in manifest]
    if missing:
        raise InvalidParameterError(
            f"{path}: not a geounet chip manifest (missing {', '.join(missing)}); re-create the "
            "folder with prepare_data."
        )
    check_chip_paths(path, manifest["chips"])
    return manifest


def check_chip_paths(manifest_path: Path, chips: Sequence[Any]) -> None:
    """Check that every chip file of a manifest lies inside its folder and exists.

    A manifest is data from anywhere: a chip path like ``../../etc/x`` or ``/data/x`` would
    make training read files outside the chip folder, so only relative paths that stay inside
    the folder are accepted.

    Args:
        manifest_path: The ``manifest.json`` (its folder is the chip folder).
        chips: Its ``chips`` records (``image`` and ``label`` paths relative to the folder).

    Raises:
        InvalidParameterError: A record is malformed, or a path is absolute or leaves the
            folder.
        InputNotFoundError: A listed chip file does not exist.
    """
    folder = manifest_path.parent.resolve()
    if not isinstance(chips, list):
        raise InvalidParameterError(
            f"{manifest_path}: 'chips' is not a list of chip records; re-create the folder "
            "with prepare_data."
        )
    for rec in chips:
        for key in ("image", "label"):
            rel = rec.get(key) if isinstance(rec, dict) else None
            if not isinstance(rel, str) or not rel:
                raise InvalidParameterError(
                    f"{manifest_path}: a chip record has no {key} path ({rec!r}); re-create "
                    "the folder with prepare_data."
                )
            target = (folder / rel).resolve()
            if Path(rel).is_absolute() or not target.is_relative_to(folder):
                raise InvalidParameterError(
                    f"{manifest_path}: chip path {rel!r} is outside the chip folder; chip "
                    "paths must be relative and stay inside the folder (no '..', no absolute "
                    "paths). Re-create the folder with prepare_data."
                )
            if not target.is_file():
                raise InputNotFoundError(
                    f"{manifest_path}: lists the chip {rel}, which does not exist; the folder "
                    "is incomplete: copy it again or re-create it with prepare_data."
                )
