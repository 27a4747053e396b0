"""geounet's QGIS plugin: a Processing provider that runs the ``geounet`` command."""


def classFactory(iface):  # noqa: N802 - QGIS's entry point name
    """Called by QGIS when it loads the plugin."""
    from .plugin import GeounetPlugin

    return GeounetPlugin(iface)
