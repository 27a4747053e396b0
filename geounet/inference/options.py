"""The options of scene classification, checked once and passed through as one object.

:func:`geounet.inference.classify.classify_raster`, ``UnetClassifier.classify`` and
``geounet classify`` take these as keyword arguments and build one :class:`ClassifyOptions`;
everything below them (:func:`~geounet.inference.classify.classify_rows`,
:func:`~geounet.inference.classify.predict_array`, the tile loop, the workflows) receives that
object. The fields are documented here, once.

Example:
    >>> opts = ClassifyOptions(tile_size=256, overlap=32, tta="flips")
    >>> opts.tile_size, opts.blend
    (256, 'spline')
    >>> ClassifyOptions(batch_size=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geounet.core.errors.InvalidParameterError: batch_size=0 is not allowed; ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from numbers import Integral
from pathlib import Path
from typing import Any

from geounet.core.errors import InvalidParameterError
from geounet.core.types import TTA_MODES, PathLike, check_choice
from geounet.inference.blending import TilePlan
from geounet.inference.engines import ENGINE_CHOICES
from geounet.io.write import OUTPUT_FORMATS

__all__ = ["PROBABILITIES_SUFFIX", "ClassifyOptions", "probabilities_path"]

#: Appended to the class raster's stem to name the probabilities written beside it.
PROBABILITIES_SUFFIX = "_probabilities"


def probabilities_path(out_raster: PathLike) -> Path:
    """Where ``classify`` writes the probabilities of ``out_raster`` by default: beside it.

    Example:
        >>> probabilities_path("out/scene_classified.tif")
        PosixPath('out/scene_classified_probabilities.tif')
    """
    out = Path(out_raster)
    return out.with_name(f"{out.stem}{PROBABILITIES_SUFFIX}.tif")


def _checked_bands(bands: Any) -> tuple[int, ...] | None:
    """``bands`` as a tuple of 1-based band numbers (None for an empty one)."""
    single = isinstance(bands, Integral | str) or not hasattr(bands, "__iter__")
    items = [bands] if single else list(bands)
    ok = all(isinstance(b, Integral) and not isinstance(b, bool) and b >= 1 for b in items)
    if not ok:
        raise InvalidParameterError(
            f"bands={bands!r} is not allowed; give the input's band numbers (1-based, as in "
            "GDAL) in the model's order, e.g. bands=(3, 2, 1) (--bands 3,2,1)."
        )
    return tuple(int(b) for b in items) or None


@dataclass(frozen=True)
class ClassifyOptions:
    """How a scene is classified: tiling, blending, outputs, checks.

    Attributes:
        tile_size: Tile side in pixels fed to the network (a multiple of 32, at least 64;
            a raster smaller than a tile gets a smaller tile).
        overlap: Overlap between neighbouring tiles in pixels (at most half a tile).
        batch_size: Tiles per network call (1 or more).
        blend: How overlapping tiles are merged: ``"spline"`` (smooth weight window),
            ``"linear"`` or ``"none"`` (centre crop).
        tta: Test-time augmentation: None (default), ``"rot180"`` (the tile and its half
            turn, 2 versions), ``"flips"`` (4) or ``"dihedral"`` (8). On real scenes (README,
            "Accuracy on real imagery"; 24 trained models, polygons with the peak filter of
            ``vectorize``) ``"flips"`` raised object F1 by 0.024 (Zanzibar, 12 of 14 models
            up), 0.045 (Kampala, 4 of 4) and 0.027 (Inria, 3 of 4) and building IoU by
            0.011-0.018, but a weak Atlanta model lost most of its buildings to the filter
            (averaged probabilities are rarely 0.98; since the threshold follows the scene,
            it keeps 7 of 14 instead of 3); ``"rot180"`` gave about half of that for half
            the cost. On the 17 models of today's defaults the gain is smaller (Kampala
            +0.024, Zanzibar +0.005, Inria +0.004; building IoU up on all 17). Each version
            costs a pass of the network, so it is opt-in.
        probabilities: The class probabilities, a uint8 (0-255) raster with one band per
            class, named in the class raster's ``GEOUNET_PROBABILITIES`` tag so that
            ``vectorize`` drops the buildings (and road ends) the network was never sure of.
            True (default): beside the class raster, ``<its stem>_probabilities.tif``
            (:func:`probabilities_path`); a path: there (another file than the class
            raster); False or None: not written, and ``vectorize`` of the class raster alone
            then keeps every building. Measured on real scenes (fourteenth round of
            ``benchmarks/README.md``): vectorizing with them raised object F1 by 0.02-0.05 on
            15 of 17 models and lowered it on none. Writing them (2 CPU cores, a trained
            two-class model, ``benchmarks/probabilities_cost.py``) made classifying 1.05-1.07
            times as long on PyTorch and 1.11 times on ONNX Runtime (best of the rounds), and
            took 0.40 bytes per pixel beside the class raster's 0.02 (``benchmarks/README.md``,
            twenty-fourth round).
        output_format: ``"GTiff"`` or ``"COG"`` (Cloud-Optimised GeoTIFF with overviews).
        overwrite: Replace outputs that already exist (refused otherwise).
        progress: Show a progress bar over tiles.
        resample: Run at the model's pixel size when the input's differs by more than 5 %
            (along either axis; geographic CRSs are measured in metres at the raster centre),
            then map the result back onto the input grid (nearest). A difference of more
            than 25 % warns, naming both pixel sizes. An input more than 4 times coarser
            (:data:`~geounet.inference.classify.MAX_UPSAMPLE`) is refused: the model never
            saw imagery like it, and the grid to classify would grow 16 times or more (a
            10 m scene for a 0.3 m model: a thousand times); ``resample=False`` classifies it
            as it is.
        allow_no_crs: Accept an input without a CRS (the output has none either).
        engine: What runs the network: ``"auto"`` (the fastest installed engine whose class
            map agrees with PyTorch float32 on >= 99.5 % of pixels, measured once on the
            scene's first tiles and cached beside the model; runs under 16 megapixels
            without a cached decision use PyTorch), ``"torch"``, ``"onnx"`` (ONNX Runtime,
            ``pip install "geounet[onnx]"``), ``"openvino"`` (``pip install
            "geounet[openvino]"``), or a variant such as ``"torch-bf16"`` or ``"onnx-int8"``
            (see :mod:`geounet.inference.engines`). The output's ``GEOUNET_ENGINE`` tag names
            the engine that ran.
        asset: The asset key (e.g. ``"visual"``) when the input is a STAC Item (a JSON file
            or URL); may be left out when the Item has a single GeoTIFF asset. Inputs may also
            be ``http(s)://``, ``s3://``, ``gs://`` or ``az://`` URLs of GeoTIFFs, read with
            range requests (:mod:`geounet.io.remote`).
        resume: Keep the finished rows, every 512, in a hidden folder beside the output
            (``.<name>.resume``) and, when it already holds rows of an interrupted run with
            the same input, model and options, continue from the last completed band; the
            result is identical to an uninterrupted run (:mod:`geounet.inference.resume`).
        nodata: The input's nodata value, over the one the file declares (or where it
            declares none, e.g. 0 for a black border): those pixels become nodata (255) in
            the class raster and take no part in the tiles' normalisation.
        bands: The input's bands the model reads, 1-based and in the model's order, e.g.
            ``(3, 2, 1)`` to feed a red-green-blue model from a blue-green-red image, or
            ``(4, 3, 2)`` from a four-band image whose red, green and blue are its last
            three (a band may repeat: ``(1, 1, 1)``). None (default): bands named alike on
            both sides (descriptions, or the colour interpretation) are matched by name,
            else by position among the data bands (an alpha band left out).

    Raises:
        InvalidParameterError: A value is out of range or not one of the allowed choices
            (raised on construction, before any file is opened).
    """

    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    blend: str = "spline"
    tta: str | None = None
    probabilities: PathLike | bool | None = True
    output_format: str = "GTiff"
    overwrite: bool = False
    progress: bool = True
    resample: bool = True
    allow_no_crs: bool = False
    engine: str = "auto"
    asset: str | None = None
    resume: bool = False
    nodata: float | None = None
    bands: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", _checked_bands(self.bands))
        if self.tta is not None:
            check_choice("tta", self.tta, TTA_MODES)
        bad = isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
        if bad or self.batch_size < 1:
            raise InvalidParameterError(
                f"batch_size={self.batch_size!r} is not allowed; use an integer, 1 or more."
            )
        check_choice("output_format", self.output_format, OUTPUT_FORMATS)
        check_choice("engine", self.engine, ENGINE_CHOICES)
        # tile_size, overlap and blend are checked by the tile plan itself
        TilePlan.build(64, 64, tile_size=self.tile_size, overlap=self.overlap, blend=self.blend)
        if self.probabilities is False:
            object.__setattr__(self, "probabilities", None)
        elif self.probabilities is not None and self.probabilities is not True:
            object.__setattr__(self, "probabilities", Path(self.probabilities))

    def for_output(self, out_raster: PathLike) -> ClassifyOptions:
        """These options for the class raster ``out_raster``: ``probabilities`` a path or None.

        True becomes the file beside ``out_raster`` (:func:`probabilities_path`).

        Example:
            >>> ClassifyOptions().for_output("out/scene_classified.tif").probabilities
            PosixPath('out/scene_classified_probabilities.tif')
            >>> ClassifyOptions(probabilities=False).for_output("c.tif").probabilities is None
            True
        """
        if self.probabilities is not True:
            return self
        return replace(self, probabilities=probabilities_path(out_raster))

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> ClassifyOptions:
        """The options from an entry point's arguments (its ``locals()``), checked.

        The public entry points take every field as a keyword argument of the same name and
        pass their ``locals()`` here, so that the list of fields is written out once, in this
        class; other names (the model, the paths) are ignored.

        Raises:
            KeyError: A field is not among ``arguments`` (an entry point out of step).
            InvalidParameterError: A value is not allowed.
        """
        return cls(**{f.name: arguments[f.name] for f in fields(cls)})
