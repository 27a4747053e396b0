"""Screenshots of geounet inside QGIS, taken headless (``QT_QPA_PLATFORM=offscreen``).

Run with QGIS's Python after ``geounet demo`` (it needs the demo's outputs)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 docs/qgis_screenshots.py demo_out

Writes ``docs/qgis_processing_dialog.png`` (the Processing dialog of "Classify raster", as the
Toolbox opens it) and ``docs/qgis_classified.png`` (the demo's test scene, its classified raster
styled by the model's colour table, and the building polygons and road lines, rendered by QGIS's
own map renderer with the layers loaded the way the plugin loads them).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # no .aux.xml statistics beside the sample data
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Start QGIS, register the plugin, grab the dialog and render the map."""
    from qgis.core import (
        QgsApplication,
        QgsFillSymbol,
        QgsLineSymbol,
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsRasterLayer,
        QgsSingleSymbolRenderer,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out").resolve()
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, str(REPO / "qgis"))
    from geounet_qgis.plugin import GeounetPlugin

    plugin = GeounetPlugin()  # keep a reference: the provider lives as long as the plugin
    plugin.initProcessing()
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    alg = QgsApplication.processingRegistry().createAlgorithmById("geounet:classify")
    dialog = AlgorithmDialog(alg, False, None)
    dialog.resize(900, 620)
    dialog.show()
    app.processEvents()
    dialog.grab().save(str(REPO / "docs" / "qgis_processing_dialog.png"))

    image = QgsRasterLayer(str(REPO / "sample_data" / "test.tif"), "test.tif")
    renderer = image.renderer()
    if hasattr(renderer, "setRedBand"):  # blue, green, red, nir: draw red-green-blue
        renderer.setRedBand(3)
        renderer.setBlueBand(1)
    classified = QgsRasterLayer(str(demo / "test_classified.tif"), "classified")
    classified.setOpacity(0.45)
    layers = [image, classified]
    vectors = demo / "test_features.gpkg"
    for name, colour in (("building", "#e31a1c"), ("road", "#ffff33")):
        layer = QgsVectorLayer(f"{vectors}|layername={name}", name, "ogr")
        if not layer.isValid():
            continue
        if name == "road":
            symbol = QgsLineSymbol.createSimple({"line_color": colour, "line_width": "0.7"})
        else:
            symbol = QgsFillSymbol.createSimple(
                {"color": "0,0,0,0", "outline_color": colour, "outline_width": "0.5"}
            )
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
        layers.insert(0, layer)
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(image.crs())
    settings.setExtent(image.extent())
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(REPO / "docs" / "qgis_classified.png"))
    app.exitQgis()


if __name__ == "__main__":
    main()
