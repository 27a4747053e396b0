"""Run geounet's Processing algorithms inside a real, headless QGIS (QGIS's own Python).

Usage: ``/usr/bin/python3 tests/qgis_driver.py SPEC.json RESULT.json`` with ``SPEC`` =
``{"executable": "...", "runs": [{"alg": "geounet:classify", "params": {...},
"cancel_on_progress": false}]}``. Writes, per run, the outputs, the layers queued to load
(name, CRS, renderer, feature count, field names) and the error message if the run failed.
Called by tests/test_qgis.py; not a test itself.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]


def _start():
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, str(REPO / "qgis"))
    from geounet_qgis.plugin import GeounetPlugin

    plugin = GeounetPlugin()
    plugin.initProcessing()
    return app, plugin


def _layer_info(layer):
    info = {"name": layer.name(), "crs": layer.crs().authid(), "valid": layer.isValid()}
    if hasattr(layer, "featureCount"):
        info["features"] = layer.featureCount()
        info["fields"] = [f.name() for f in layer.fields()]
        info["renderer"] = layer.renderer().type() if layer.renderer() else None
    else:
        info["renderer"] = layer.renderer().type() if layer.renderer() else None
        info["bands"] = layer.bandCount()
    return info


def _run(run):
    import processing
    from qgis.core import (
        QgsProcessingContext,
        QgsProcessingException,
        QgsProcessingFeedback,
        QgsProject,
        QgsRasterLayer,
    )

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    progress = []

    def on_progress(value):
        progress.append(value)
        if run.get("cancel_on_progress") and value > 0:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    result = {"error": None, "outputs": {}, "loaded": [], "progress_updates": 0}
    try:
        outputs = processing.run(run["alg"], run["params"], context=context, feedback=feedback)
        result["outputs"] = {k: str(v) for k, v in outputs.items()}
    except QgsProcessingException as exc:
        result["error"] = str(exc)
    result["progress_updates"] = len(progress)
    for layer_id, details in context.layersToLoadOnCompletion().items():
        layer = context.temporaryLayerStore().mapLayer(layer_id)
        if layer is None:
            layer = context.getMapLayer(layer_id) if hasattr(context, "getMapLayer") else None
        if layer is None and os.path.exists(layer_id):
            layer = QgsRasterLayer(layer_id, details.name)
        if layer is not None:
            result["loaded"].append(_layer_info(layer))
    out = result["outputs"].get("OUTPUT")
    if out and out.endswith(".tif") and os.path.exists(out):
        result["output_layer"] = _layer_info(QgsRasterLayer(out, "classified"))
    return result


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    app, _plugin = _start()
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.setSettingValue("GEOUNET_EXECUTABLE", spec["executable"])
    from qgis.core import QgsApplication

    algs = sorted(a.id() for a in QgsApplication.processingRegistry().algorithms())
    results = {"algorithms": [a for a in algs if a.startswith("geounet:")], "runs": []}
    for run in spec["runs"]:
        results["runs"].append(_run(run))
    Path(sys.argv[2]).write_text(json.dumps(results, indent=2))
    app.exitQgis()


if __name__ == "__main__":
    main()
