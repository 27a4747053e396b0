"""GeoData: a chip folder with its datasets, loaders, summary table and ``show_batch``.

Example:
    >>> data = GeoData.from_folder("chips/", batch_size=16)    # doctest: +SKIP
    >>> x, y = next(iter(data.train_dl))  # float32 [B,C,H,W], int64 [B,H,W]  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from torch.utils.data import DataLoader, Dataset

from geounet.core.classes import ClassSpec, classes_from_json
from geounet.core.errors import InvalidParameterError
from geounet.core.types import PathLike
from geounet.data.augment import random_dihedral
from geounet.data.manifest import MANIFEST, load_manifest
from geounet.data.normalize import normalize
from geounet.io.raster import valid_mask

__all__ = ["MANIFEST", "ChipDataset", "GeoData", "check_loader_args", "load_manifest"]


class ChipDataset(Dataset):
    """The chips of one split of a chip folder, as ``(image, mask)`` tensors.

    ``image`` is float32 ``[C, H, W]`` normalised with the folder's statistics (invalid
    pixels set to 0, the mean); ``mask`` is int64 ``[H, W]`` of class indices, 255 = ignore.

    Args:
        chip_dir: The chip folder.
        chips: Its manifest's chip records for this split.
        stats: Normalisation statistics (``mean``, ``std`` per band).
        nodata: Nodata value of the image chips.
        augment: Apply a random flip/rotation (the same to image and mask) on every read.
        seed: Seed of the augmentation generator used in the main process (DataLoader
            workers use torch's per-worker seeded generator instead).
    """

    def __init__(
        self,
        chip_dir: PathLike,
        chips: Sequence[Mapping[str, Any]],
        stats: Mapping[str, Sequence[float]],
        *,
        nodata: float | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.chip_dir = Path(chip_dir)
        self.chips = list(chips)
        self.stats = {k: list(v) for k, v in stats.items()}
        self.nodata, self.augment = nodata, augment
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.chips)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw chip ``i``: image ``(C, H, W)`` in the source dtype, mask ``(H, W)`` uint8."""
        rec = self.chips[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(self.chip_dir / rec["image"]) as src:
                img = src.read()
            with rasterio.open(self.chip_dir / rec["label"]) as src:
                lab = src.read(1)
        return img, lab

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lab = self.read(i)
        x = normalize(img, self.stats)
        x[:, ~valid_mask(img, self.nodata)] = 0.0
        image = torch.from_numpy(np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0))
        mask = torch.from_numpy(lab.astype(np.int64))
        if self.augment:
            in_worker = torch.utils.data.get_worker_info() is not None
            image, mask = random_dihedral(image, mask, None if in_worker else self._gen)
        return image, mask


class GeoData:
    """A chip folder with its datasets and loaders (what :class:`UnetClassifier` trains on).

    Attributes:
        chip_dir: The chip folder.
        manifest: Its manifest (a dict).
        class_specs: Classes (:class:`~geounet.core.classes.ClassSpec`) in index order.
        classes: Class names in index order (0 = background).
        class_values: Source label value of each class.
        colors: ``"#RRGGBB"`` colour of each class.
        n_bands: Number of input bands.
        bands: 1-based source band indices.
        band_names: A name per band.
        stats: Normalisation statistics ``{"mean", "std", "p2", "p98"}``.
        chip_size: Chip size in pixels.
        gsd_m: Pixel size of the source imagery in metres (None without a CRS).
        crs: CRS of the first source image as WKT (None without a CRS).
        source_dtype: Data type of the source imagery.
        class_pixel_counts: Labelled pixels per class over all chips.
        class_weights: Median-frequency class weights (from the training chips).
        batch_size: Batch size of the loaders.
        train_ds: Training :class:`ChipDataset` (augmented when ``augment``).
        valid_ds: Validation :class:`ChipDataset` (never augmented).
        train_dl: Shuffling DataLoader over ``train_ds`` (seeded generator).
        valid_dl: DataLoader over ``valid_ds`` in order.
    """

    def __init__(
        self,
        chip_dir: PathLike,
        manifest: Mapping[str, Any] | None = None,
        *,
        batch_size: int = 8,
        augment: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        check_loader_args(batch_size, num_workers)
        self.chip_dir = Path(chip_dir)
        m = dict(manifest) if manifest is not None else load_manifest(self.chip_dir)
        self.manifest = m
        self.class_specs: list[ClassSpec] = classes_from_json(m["classes"])
        self.classes = [c.name for c in self.class_specs]
        self.class_values = [c.value for c in self.class_specs]
        self.colors = [c.color for c in self.class_specs]
        self.bands: list[int] = list(m["bands"])
        self.n_bands = len(self.bands)
        self.band_names: list[str] = list(m.get("band_names") or [f"band_{b}" for b in self.bands])
        self.stats: dict[str, list[float]] = {k: list(v) for k, v in m["stats"].items()}
        self.chip_size = int(m["chip_size"])
        self.gsd_m: float | None = m.get("gsd_m")
        self.crs: str | None = m.get("crs")
        self.source_dtype: str | None = m.get("source_dtype")
        n = len(self.classes)
        self.class_pixel_counts: list[int] = list(m.get("class_pixel_counts") or [0] * n)
        self.class_weights: list[float] = list(m.get("class_weights") or [1.0] * n)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        nd = m.get("nodata")
        split = {s: [c for c in m["chips"] if c["split"] == s] for s in ("train", "valid")}
        self.train_ds = ChipDataset(
            self.chip_dir, split["train"], self.stats, nodata=nd, augment=augment, seed=seed
        )
        self.valid_ds = ChipDataset(self.chip_dir, split["valid"], self.stats, nodata=nd)
        self.train_dl = self._loader(self.train_ds, shuffle=True)
        self.valid_dl = self._loader(self.valid_ds, shuffle=False)
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def from_folder(cls, chip_dir: PathLike, **kwargs: Any) -> GeoData:
        """Re-open a chip folder written by :func:`prepare_data` (keywords as ``__init__``)."""
        return cls(chip_dir, load_manifest(chip_dir), **kwargs)

    def _loader(self, ds: ChipDataset, *, shuffle: bool) -> DataLoader:
        n = len(ds)
        # a last batch of one chip breaks BatchNorm in training mode: drop it then
        drop_last = shuffle and n > self.batch_size and n % self.batch_size == 1
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            drop_last=drop_last,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def _own_folder(self) -> None:
        """Delete the (temporary) chip folder when this object is garbage-collected."""
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.chip_dir), True)

    @property
    def is_temporary(self) -> bool:
        """True when the chip folder is temporary (removed with this object)."""
        return self._finalizer is not None and self._finalizer.alive

    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.classes)

    def summary(self) -> Any:
        """Chip counts per split, dropped chips and class pixel shares, as a DataFrame.

        Rows: ``chips``, ``dropped: low valid fraction``, ``dropped: split gap``, then
        ``% <class>`` (share of labelled pixels, in percent) per class; columns ``train``,
        ``valid``, ``total`` and ``class_weight``. ``str()`` of it is a readable table.
        """
        from geounet.viz.batches import summary_frame

        return summary_frame(self)

    def show_batch(
        self, rows: int = 3, *, cols: int = 3, split: str = "train", alpha: float = 0.45
    ) -> Any:
        """Draw ``rows`` x ``cols`` chips with their masks overlaid in class colours.

        RGB bands are picked by name (red/green/blue) when present, else the first three
        bands, else the single band in grey; each is stretched between the 2nd and 98th
        percentiles of the training statistics.

        Args:
            rows: Rows of chips.
            cols: Chips per row.
            split: ``"train"`` or ``"valid"``.
            alpha: Opacity of the mask overlay (background and no-label stay transparent).

        Returns:
            A :class:`matplotlib.figure.Figure`.
        """
        from geounet.viz.batches import show_batch

        return show_batch(self, rows=rows, cols=cols, split=split, alpha=alpha)

    def __repr__(self) -> str:
        return (
            f"GeoData({len(self.train_ds)} train / {len(self.valid_ds)} valid chips of "
            f"{self.chip_size} px, {self.n_bands} bands, classes {self.classes}, "
            f"chip_dir={str(self.chip_dir)!r})"
        )


def check_loader_args(batch_size: int, num_workers: int) -> None:
    """Refuse a batch size < 1 or a negative number of workers."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise InvalidParameterError(f"num_workers must be an integer >= 0, got {num_workers!r}.")
