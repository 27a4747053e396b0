"""The "geounet" Processing provider and its one setting: the geounet executable."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider

from .runner import choose_executable, default_executable

SETTING = "GEOUNET_EXECUTABLE"


def configured_executable() -> str:
    """The executable set under Settings > Options > Processing > Providers > geounet."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        value = ProcessingConfig.getSetting(SETTING)
    except ImportError:  # pragma: no cover - Processing plugin disabled
        value = None
    return choose_executable(value)


class GeounetProvider(QgsProcessingProvider):
    """Classify, vectorize, classify-and-vectorize, train and evaluate with geounet."""

    def load(self) -> bool:
        """Register the executable setting, then the algorithms."""
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting

            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(
                Setting(
                    self.name(),
                    SETTING,
                    "geounet executable (in a Python environment with geounet installed)",
                    default_executable(),
                    valuetype=Setting.FILE,
                )
            )
            ProcessingConfig.readSettings()
        except ImportError:  # pragma: no cover
            pass
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        """Remove the setting."""
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(SETTING)
        except (ImportError, KeyError):  # pragma: no cover
            pass

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS's name
        """The five algorithms."""
        from .algorithms import ALGORITHMS

        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def id(self) -> str:
        """Algorithm ids are ``geounet:<name>``."""
        return "geounet"

    def name(self) -> str:
        """The group shown in the Processing Toolbox."""
        return "geounet"

    def longName(self) -> str:  # noqa: N802
        """Name with the version of the configured executable unknown (not run at load)."""
        return "geounet (U-Net segmentation)"
