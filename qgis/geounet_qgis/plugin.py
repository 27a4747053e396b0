"""The plugin object QGIS loads: it registers the Processing provider."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeounetProvider


class GeounetPlugin:
    """Registers :class:`GeounetProvider` with the Processing framework."""

    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider: GeounetProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        """Add the provider (also called by qgis_process, which has no GUI)."""
        if self.provider is None:
            self.provider = GeounetProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        """QGIS calls this when the plugin is enabled."""
        self.initProcessing()

    def unload(self) -> None:
        """QGIS calls this when the plugin is disabled or reloaded."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
