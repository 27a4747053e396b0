"""The geounet Processing algorithms: each builds a geounet command line and runs it."""

from __future__ import annotations

import json
import os

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsLineSymbol,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from . import commands
from .provider import configured_executable
from .runner import GeounetRunError, run_geounet


def _run(args: list[str], feedback) -> None:
    """Run geounet with the Processing feedback as progress bar, log and Cancel button."""
    feedback.pushInfo("geounet " + " ".join(args))
    try:
        run_geounet(
            args,
            executable=configured_executable(),
            on_progress=feedback.setProgress,
            on_line=feedback.pushInfo,
            is_canceled=feedback.isCanceled,
        )
    except GeounetRunError as exc:
        raise QgsProcessingException(str(exc)) from exc


def _class_colours(raster: str) -> dict[str, str]:
    """``{class name: "#rrggbb"}`` from the GEOUNET_CLASSES tag of a class raster."""
    try:
        from osgeo import gdal

        tag = gdal.Open(raster).GetMetadataItem("GEOUNET_CLASSES")
        return {c["name"]: c["color"] for c in json.loads(tag or "[]")}
    except (RuntimeError, ValueError, TypeError, AttributeError):
        return {}


def _load_vector_layers(path: str, colours: dict[str, str], context, output: str) -> list[str]:
    """Queue every layer of ``path`` to load on completion, outlines in the class colours."""
    from osgeo import ogr

    source = ogr.Open(path)
    names = [source.GetLayer(i).GetName() for i in range(source.GetLayerCount())] if source else []
    for name in names:
        layer = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
        colour = colours.get(name, "#e31a1c")
        if layer.geometryType() == QgsWkbTypes.LineGeometry:
            symbol = QgsLineSymbol.createSimple({"line_color": colour, "line_width": "0.8"})
        else:
            symbol = QgsFillSymbol.createSimple(
                {"color": "0,0,0,0", "outline_color": colour, "outline_width": "0.6"}
            )
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(name, context.project(), output)
        context.addLayerToLoadOnCompletion(layer.id(), details)
    return names


class _Base(QgsProcessingAlgorithm):
    """Common names and instance creation."""

    NAME = ""
    TITLE = ""
    HELP = ""

    def name(self) -> str:
        """Algorithm id (``geounet:<name>``)."""
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 - QGIS's names
        """Title in the Toolbox."""
        return self.TITLE

    def shortHelpString(self) -> str:  # noqa: N802
        """Help shown beside the dialog."""
        return self.HELP

    def createInstance(self):  # noqa: N802
        """A fresh copy for each run."""
        return type(self)()

    def _classify_params(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL",
                "Model folder (geounet.json + model.safetensors)",
                behavior=QgsProcessingParameterFile.Folder,
            )
        )
        integer = QgsProcessingParameterNumber.Integer
        self.addParameter(
            QgsProcessingParameterNumber("TILE_SIZE", "Tile size", integer, 512, False, 64)
        )
        self.addParameter(
            QgsProcessingParameterNumber("OVERLAP", "Overlap (px)", integer, 64, False, 0)
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "TTA", "Test-time augmentation", options=list(commands.TTA_CHOICES), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "DEVICE", "Device", options=list(commands.DEVICES), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "NODATA",
                "Image nodata value, where the file declares none (e.g. 0 for a black border)",
                QgsProcessingParameterNumber.Double,
                None,
                True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "ALLOW_NO_CRS", "Accept a raster without a CRS (the output has none)", False
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "ENGINE",
                "Engine (auto: the fastest installed one that agrees with PyTorch)",
                options=list(commands.ENGINES),
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBand(
                "BANDS",
                "Bands the model reads, in its order (none chosen: by band name, else in order)",
                None,
                "INPUT",
                optional=True,
                allowMultiple=True,
            )
        )

    def _classify_args(self, parameters, context, out: str, **extra) -> list[str]:
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None:
            raise QgsProcessingException("no input raster layer given.")
        return commands.classify_args(
            layer.source(),
            self.parameterAsFile(parameters, "MODEL", context),
            out,
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            overlap=self.parameterAsInt(parameters, "OVERLAP", context),
            tta=commands.TTA_CHOICES[self.parameterAsEnum(parameters, "TTA", context)],
            device=commands.DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            nodata=(
                self.parameterAsDouble(parameters, "NODATA", context)
                if parameters.get("NODATA") not in (None, "")
                else None
            ),
            allow_no_crs=self.parameterAsBool(parameters, "ALLOW_NO_CRS", context),
            engine=commands.ENGINES[self.parameterAsEnum(parameters, "ENGINE", context)],
            bands=self.parameterAsInts(parameters, "BANDS", context) or None,
            **extra,
        )


class ClassifyRaster(_Base):
    """Class raster (with the model's colour table) from an image."""

    NAME, TITLE = "classify", "Classify raster"
    HELP = "Classifies the raster with a geounet model (tiled, blended, no seams)."

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        """Parameters."""
        self._classify_params()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Classified"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                "PROBABILITIES", "Class probabilities", optional=True, createByDefault=False
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run ``geounet classify``."""
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        probs = self.parameterAsOutputLayer(parameters, "PROBABILITIES", context) or None
        _run(self._classify_args(parameters, context, out, probabilities=probs), feedback)
        return {"OUTPUT": out, "PROBABILITIES": probs}


class VectorizeClasses(_Base):
    """Building polygons and road centre lines from a class raster."""

    NAME, TITLE = "vectorize", "Vectorize classes"
    HELP = "Turns a class raster into one layer per class (buildings regularized, roads as lines)."

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class raster"))
        self.addParameter(
            QgsProcessingParameterFileDestination("OUTPUT", "Vectors", "GeoPackage (*.gpkg)")
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run ``geounet vectorize`` and load every layer."""
        raster = self.parameterAsRasterLayer(parameters, "INPUT", context).source()
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        _run(commands.vectorize_args(raster, out), feedback)
        layers = _load_vector_layers(out, _class_colours(raster), context, "OUTPUT")
        return {"OUTPUT": out, "LAYERS": ",".join(layers)}


class ClassifyAndVectorize(_Base):
    """Both in one click."""

    NAME, TITLE = "classify_vectorize", "Classify and vectorize"
    HELP = "Classifies the raster, then vectorizes the result: a class raster and vector layers."

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        """Parameters."""
        self._classify_params()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Classified"))
        self.addParameter(
            QgsProcessingParameterFileDestination("VECTORS", "Vectors", "GeoPackage (*.gpkg)")
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run ``geounet classify --vector``."""
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        vectors = self.parameterAsFileOutput(parameters, "VECTORS", context)
        _run(self._classify_args(parameters, context, out, vector=vectors), feedback)
        layers = _load_vector_layers(vectors, _class_colours(out), context, "VECTORS")
        return {"OUTPUT": out, "VECTORS": vectors, "LAYERS": ",".join(layers)}


class TrainModel(_Base):
    """A model folder from a raster and a label vector layer with a class field."""

    NAME, TITLE = "train", "Train model"
    HELP = (
        "Trains a U-Net on the raster with the label polygons/lines (the class field names each "
        "feature's class) and writes a model folder for Classify raster."
    )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Training raster"))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "LABELS", "Labels", [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorLine]
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                "CLASS_FIELD", "Class field", parentLayerParameterName="LABELS", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "LABEL_AREA",
                "Labelled area (polygons: where the labels are complete; the rest is not "
                "taught as background)",
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "CLASSES", "Classes (e.g. building or 1=building,2=road)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "BACKBONE", "Backbone", options=list(commands.BACKBONES), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "EPOCHS",
                "Epochs (0: geounet's default)",
                QgsProcessingParameterNumber.Integer,
                0,
                False,
                0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "LEARNING_RATE",
                "Learning rate (0: geounet's learning-rate finder)",
                QgsProcessingParameterNumber.Double,
                0.0,
                False,
                0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "CHIP_SIZE", "Chip size", QgsProcessingParameterNumber.Integer, 256, False, 32
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "REFIT_ON_ALL",
                "Then train again on all labels, validation strip included (small labelled "
                "areas; about twice the time)",
                False,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                "START_FROM",
                "Start from this model folder (fine-tune it on these labels; the backbone is "
                "then the model's)",
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run ``geounet train``."""
        image = self.parameterAsRasterLayer(parameters, "INPUT", context).source()
        # a single-layer file geounet can read (exported to a temporary file when needed)
        labels = self.parameterAsCompatibleSourceLayerPath(
            parameters, "LABELS", context, ["gpkg", "geojson", "shp"], "gpkg", feedback
        )
        area = None
        if parameters.get("LABEL_AREA"):
            area = self.parameterAsCompatibleSourceLayerPath(
                parameters, "LABEL_AREA", context, ["gpkg", "geojson", "shp"], "gpkg", feedback
            )
        out = self.parameterAsString(parameters, "OUTPUT", context)
        args = commands.train_args(
            image,
            labels,
            out,
            label_field=self.parameterAsString(parameters, "CLASS_FIELD", context) or None,
            classes=self.parameterAsString(parameters, "CLASSES", context) or None,
            backbone=commands.BACKBONES[self.parameterAsEnum(parameters, "BACKBONE", context)],
            epochs=self.parameterAsInt(parameters, "EPOCHS", context) or None,
            lr=self.parameterAsDouble(parameters, "LEARNING_RATE", context) or None,
            chip_size=self.parameterAsInt(parameters, "CHIP_SIZE", context),
            label_area=area,
            refit_on_all=self.parameterAsBool(parameters, "REFIT_ON_ALL", context),
            start_from=self.parameterAsFile(parameters, "START_FROM", context) or None,
        )
        _run(args, feedback)
        return {"OUTPUT": out}


#: Outline colours of the layers of ``geounet evaluate --objects``.
OBJECT_COLOURS = {"matched": "#33a02c", "missed": "#e31a1c", "false_positive": "#ff7f00"}


class Evaluate(_Base):
    """Pixel, building and road accuracy of a class raster against truth."""

    NAME, TITLE = "evaluate", "Evaluate"
    HELP = (
        "Scores a class raster against a truth raster or vector file: a table and a JSON file; "
        "optionally the buildings as scored (matched, missed, false positives), each miss "
        "with the share of its pixels classed building and its peak probability."
    )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class raster"))
        self.addParameter(QgsProcessingParameterFile("TRUTH", "Truth (raster or vector file)"))
        self.addParameter(
            QgsProcessingParameterFileDestination("JSON", "Metrics JSON", "JSON (*.json)")
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink("OUTPUT", "Metrics table", QgsProcessing.TypeVector)
        )
        self.addParameter(
            QgsProcessingParameterBoolean("REPORT", "Also write an HTML report", False)
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OBJECTS",
                "Scored buildings (matched, missed, false positives)",
                "GeoPackage (*.gpkg)",
                optional=True,
                createByDefault=False,
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Run ``geounet evaluate`` and turn its JSON into a table."""
        pred = self.parameterAsRasterLayer(parameters, "INPUT", context).source()
        truth = self.parameterAsFile(parameters, "TRUTH", context)
        json_out = self.parameterAsFileOutput(parameters, "JSON", context)
        report = None
        if self.parameterAsBoolean(parameters, "REPORT", context):
            report = os.path.splitext(json_out)[0] + ".html"
        objects = self.parameterAsFileOutput(parameters, "OBJECTS", context) or None
        args = commands.evaluate_args(pred, truth, json_out, report=report, objects=objects)
        _run(args, feedback)
        if objects and os.path.exists(objects):  # not written when no buildings were scored
            _load_vector_layers(objects, OBJECT_COLOURS, context, "OBJECTS")
        with open(json_out, encoding="utf-8") as f:
            rows = commands.flatten_metrics(json.load(f))
        fields = QgsFields()
        fields.append(QgsField("metric", QVariant.String))
        fields.append(QgsField("value", QVariant.Double))
        fields.append(QgsField("text", QVariant.String))
        sink, dest = self.parameterAsSink(
            parameters, "OUTPUT", context, fields, QgsWkbTypes.NoGeometry
        )
        for key, value in rows:
            feature = QgsFeature(fields)
            number = value if isinstance(value, float) else None
            feature.setAttributes([key, number, None if number is not None else str(value)])
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        return {"OUTPUT": dest, "JSON": json_out, "REPORT": report, "OBJECTS": objects}


ALGORITHMS = [ClassifyRaster, VectorizeClasses, ClassifyAndVectorize, TrainModel, Evaluate]
