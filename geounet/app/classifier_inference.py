"""How ``UnetClassifier`` classifies: arrays, whole scenes, scored scenes and exports.

A mixin of :class:`geounet.app.classifier.UnetClassifier`; every method hands the model to
the layer that does the work (:mod:`geounet.inference.classify`,
:mod:`geounet.evaluation.evaluate`, :mod:`geounet.app.export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geounet.core.types import PathLike

__all__ = ["Inference"]


class Inference:
    """Classification, scoring and export of a trained classifier (a mixin)."""

    def predict(
        self, array: np.ndarray, *, valid: np.ndarray | None = None, **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classify a ``(bands, H, W)`` array in the raster's band order and data type.

        Args:
            array: ``(C, H, W)`` raw values.
            valid: Optional ``(H, W)`` boolean mask of valid pixels.
            **options: Tiling fields of :class:`~geounet.inference.options.ClassifyOptions`
                (``tile_size``, ``overlap``, ``batch_size``, ``blend``, ``tta``; no progress
                bar unless ``progress=True``).

        Returns:
            ``(classes, probabilities)``: ``uint8 (H, W)`` and ``float32 (K, H, W)``, as
            :func:`geounet.inference.classify.predict_array` gives them.
        """
        from geounet.inference.classify import predict_array
        from geounet.inference.options import ClassifyOptions

        opts = ClassifyOptions(**{"progress": False, **options})
        return predict_array(self, np.asarray(array), opts, valid=valid)

    def classify(
        self,
        in_raster: PathLike,
        out_raster: PathLike,
        vector: PathLike | None = None,
        *,
        tile_size: int = 512,
        overlap: int = 64,
        batch_size: int = 4,
        blend: str = "spline",
        tta: str | None = None,
        probabilities: PathLike | bool | None = True,
        output_format: str = "GTiff",
        overwrite: bool = False,
        progress: bool = True,
        resample: bool = True,
        allow_no_crs: bool = False,
        engine: str = "auto",
        asset: str | None = None,
        resume: bool = False,
        nodata: float | None = None,
        bands: tuple[int, ...] | list[int] | None = None,
    ) -> Path:
        """Classify a raster of any size into a georeferenced class raster.

        Streamed window by window in overlapping, mirror-padded, blended tiles; the same as
        :func:`geounet.inference.classify.classify_raster`. The keyword arguments are the
        fields of :class:`~geounet.inference.options.ClassifyOptions`, documented there.

        With ``vector`` the result is also vectorized into that file (``.gpkg``, ``.geojson``,
        ``.shp``, ``.fgb``, ``.parquet``; one layer per class), as ``geounet classify
        --vector`` does: the building probabilities are at hand (beside ``out_raster`` by
        default; a temporary file with ``probabilities=False``), so buildings the network was
        never sure of are dropped, and every output is checked before the network runs.
        Without ``vector`` the probabilities are written all the same (unless
        ``probabilities=False``), so ``vectorize(out_raster)`` later drops them too.

        Example:
            Not run as a doctest: it needs a trained model and a scene on disk.

            >>> model.classify("scene.tif", "scene_classified.tif", tta="flips")  # doctest: +SKIP
            >>> model.classify("scene.tif", "classes.tif", "buildings.gpkg")  # doctest: +SKIP
        """
        from geounet.inference.options import ClassifyOptions

        options = ClassifyOptions.from_arguments(locals())
        if vector is not None:
            from geounet.app.scene_outputs import classify_and_vectorize

            classify_and_vectorize(self, in_raster, out_raster, vector=vector, options=options)
            return Path(out_raster)
        from geounet.inference.classify import classify_with_options

        return classify_with_options(self, in_raster, out_raster, options)

    def evaluate(
        self,
        image: PathLike,
        truth: PathLike,
        *,
        classified: PathLike | None = None,
        report: PathLike | None = None,
        error_map: PathLike | None = None,
        objects: PathLike | None = None,
        iou_threshold: float = 0.5,
        road_buffer_m: float = 3.0,
        truth_values: dict[int, int] | None = None,
        tta: str | None = None,
        bands: tuple[int, ...] | list[int] | None = None,
        overwrite: bool = False,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Classify ``image``, vectorize and score it against ``truth`` in one call.

        The same code path as ``geounet classify --vector`` then ``geounet evaluate``
        (:func:`geounet.evaluation.evaluate.evaluate`, where the metrics and the other
        keywords are documented); ``truth`` is a class raster or a vector file. The building
        probabilities go to a temporary file named in the class raster, so the polygons
        scored are the ones ``geounet classify --vector`` writes: buildings the network was
        never sure of are dropped (:mod:`geounet.vectorizing.confidence`).

        Args:
            image: The image to classify.
            truth: Truth raster or vector file of the same area.
            classified: Keep the class raster here (default: a temporary file, removed).
            report: HTML report to write.
            error_map: Error-map GeoTIFF to write.
            objects: Vector file of the buildings as scored (matched, missed, false
                positive; each miss with the share classed and the peak probability under it).
            iou_threshold: Smallest IoU of a building match.
            road_buffer_m: Road tolerance in metres.
            truth_values: ``{truth raster value: class index}``.
            tta: Test-time augmentation of the classification.
            bands: The image's bands the model reads, in its order (see
                :class:`~geounet.inference.options.ClassifyOptions`).
            overwrite: Replace existing outputs.
            progress: Show the classification's progress bar.

        Returns:
            The result of :func:`~geounet.evaluation.evaluate.evaluate`, with ``"image"``.

        Example:
            Not run as a doctest: it needs a trained model, a scene and its labels on disk.

            >>> model.evaluate("test.tif", "test_labels.tif")["miou"]  # doctest: +SKIP
            0.73
        """
        import tempfile

        from geounet.evaluation.evaluate import evaluate

        with tempfile.TemporaryDirectory(prefix="geounet_evaluate_") as tmp:
            out = Path(classified) if classified is not None else Path(tmp) / "classified.tif"
            probabilities = Path(tmp) / "probabilities.tif"
            self.classify(
                image,
                out,
                tta=tta,
                bands=bands,
                probabilities=probabilities,
                overwrite=overwrite,
                progress=progress,
            )
            result = evaluate(
                out,
                truth,
                iou_threshold=iou_threshold,
                road_buffer_m=road_buffer_m,
                report=report,
                error_map=error_map,
                objects=objects,
                truth_values=truth_values,
                overwrite=overwrite,
            )
        return {"image": str(image), **result}

    def export(
        self,
        format: str,
        out: PathLike,
        *,
        tile_size: int = 512,
        overlap: int = 64,
        overwrite: bool = False,
    ) -> Path:
        """Export for QGIS (``"onnx"``), ArcGIS Pro (``"dlpk"``) or ``"torchscript"``.

        See :func:`geounet.app.export.export_model`.
        """
        from geounet.app.export import export_model

        return export_model(
            self, format, out, tile_size=tile_size, overlap=overlap, overwrite=overwrite
        )
