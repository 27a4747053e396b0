"""GeoData: a chip folder with its datasets, loaders, summary table and ``show_batch``.

Example:
    Not run as a doctest: it needs a chip folder written by ``prepare_data``.

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
from rasterio._err import CPLE_BaseError
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from torch.utils.data import DataLoader, Dataset

from geounet.core.classes import ClassSpec, classes_from_json
from geounet.core.errors import InvalidParameterError
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.data.augment import AugmentOptions, augment_chip, augment_options, cut_mix
from geounet.data.manifest import MANIFEST, load_manifest
from geounet.data.normalize import normalize_valid
from geounet.io.raster import read_failed, valid_mask

__all__ = [
    "CHIP_CACHE_MB",
    "MANIFEST",
    "ChipDataset",
    "FolderOwner",
    "GeoData",
    "check_loader_args",
    "chip_valid",
    "load_manifest",
]

#: Decoded chips a dataset keeps in memory after their first read, in MiB (per dataset, and
#: per DataLoader worker process). Later epochs then skip opening and decoding two GeoTIFFs
#: per chip (about a quarter of the loader's time with augmentation on); chips beyond the
#: budget are read from disk each time. 0 turns the cache off.
CHIP_CACHE_MB = 512


class FolderOwner:
    """Removes a (temporary) folder when the last object holding this owner is gone.

    :class:`GeoData` and its datasets (so also the loaders over them) hold the owner of a
    temporary chip folder: the folder lives as long as any of them is in use. It pickles as
    None: a copy (what a DataLoader worker process gets) does not own the folder.

    Args:
        folder: The folder to remove.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    @property
    def alive(self) -> bool:
        """True until the folder has been removed."""
        return self._finalizer.alive

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(None), ()  # unpickles as None: copies in worker processes own nothing


def chip_valid(src: Any, image: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Boolean ``(h, w)`` validity of an image chip as :func:`prepare_data` wrote it.

    The chip's GDAL mask band when it has one (written where the source had nodata, an
    alpha or mask band, NaN or padding), else its own nodata value (``nodata`` only when the
    file records none) and NaN/inf.

    Args:
        src: The open chip dataset.
        image: Its bands, ``(C, h, w)``.
        nodata: Nodata of chips whose file records none.
    """
    if MaskFlags.per_dataset in src.mask_flag_enums[0]:
        return valid_mask(image, None, src.read_masks(1))
    return valid_mask(image, src.nodata if src.nodata is not None else nodata)


class ChipDataset(Dataset):
    """The chips of one split of a chip folder, as ``(image, mask)`` tensors.

    ``image`` is float32 ``[C, H, W]`` normalised with the folder's statistics, invalid
    pixels (see :func:`chip_valid`) set to 0, the mean, exactly as inference feeds them
    (:func:`~geounet.data.normalize.normalize_valid`); ``mask`` is int64 ``[H, W]`` of class
    indices, 255 = ignore (also at every invalid pixel).

    Args:
        chip_dir: The chip folder.
        chips: Its manifest's chip records for this split.
        stats: Normalisation statistics (``mean``, ``std`` per band).
        nodata: Nodata of image chips whose file records none (chips written by
            :func:`prepare_data` record their own).
        augment: Augment every read with :func:`~geounet.data.augment.augment_chip` (flips
            and quarter turns, scale jitter, per-band brightness/contrast/gamma; nodata kept):
            True (the default options), False, an
            :class:`~geounet.data.augment.AugmentOptions` or a mapping of its fields.
        seed: Seed of the augmentation generator used in the main process (DataLoader
            workers use torch's per-worker seeded generator instead).
        owner: A :class:`FolderOwner` of a temporary ``chip_dir``, kept alive with the
            dataset.
        cache_mb: Keep decoded chips in memory up to this many MiB (None:
            :data:`CHIP_CACHE_MB`); they are returned read-only.
    """

    def __init__(
        self,
        chip_dir: PathLike,
        chips: Sequence[Mapping[str, Any]],
        stats: Mapping[str, Sequence[float]],
        *,
        nodata: float | None = None,
        augment: bool | AugmentOptions | Mapping[str, Any] = False,
        seed: int = 0,
        owner: FolderOwner | None = None,
        cache_mb: float | None = None,
    ) -> None:
        self.chip_dir = Path(chip_dir)
        self.chips = list(chips)
        self.stats = {k: list(v) for k, v in stats.items()}
        self.nodata = nodata
        self.augment: AugmentOptions | None = augment_options(augment)
        self.owner = owner
        self._gen = torch.Generator().manual_seed(seed)
        self.cache_mb = CHIP_CACHE_MB if cache_mb is None else cache_mb
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for DataLoader worker processes) without the cached chips."""
        state = dict(self.__dict__)
        state["_cache"], state["_cached_bytes"] = {}, 0
        return state

    def __len__(self) -> int:
        return len(self.chips)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw chip ``i``: image ``(C, H, W)`` in the source dtype, mask ``(H, W)`` uint8."""
        img, _, lab = self.read_valid(i)
        return img, lab

    def read_valid(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chip ``i``: raw image ``(C, H, W)``, validity ``(H, W)`` bool, mask ``(H, W)`` uint8.

        Read from the chip files, or from memory once read (read-only arrays, see
        ``cache_mb``).
        """
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        arrays = self._read_files(i)
        size = sum(a.nbytes for a in arrays)
        if self._cached_bytes + size <= self.cache_mb * 2**20:
            for a in arrays:
                a.setflags(write=False)
            self._cache[i] = arrays
            self._cached_bytes += size
        return arrays

    def read_label(self, i: int) -> np.ndarray:
        """The label chip ``i`` alone, class indices ``(H, W)`` uint8 (the image is not read)."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit[2]
        path = self.chip_dir / self.chips[i]["label"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    return src.read(1)
        except (RasterioError, CPLE_BaseError) as exc:
            raise read_failed(path, exc) from exc

    def _read_files(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chip ``i`` read from its image and label files."""
        rec = self.chips[i]
        path = self.chip_dir / rec["image"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    img = src.read()
                    valid = chip_valid(src, img, self.nodata)
                path = self.chip_dir / rec["label"]
                with rasterio.open(path) as src:
                    lab = src.read(1)
        except (RasterioError, CPLE_BaseError) as exc:
            raise read_failed(path, exc) from exc
        return img, valid, lab

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        opt = self.augment
        in_worker = torch.utils.data.get_worker_info() is not None
        gen = None if in_worker else self._gen
        image, mask = self._chip(i, gen)
        p_mix = opt.cutmix if opt is not None and len(self) > 1 else 0.0
        if p_mix > 0 and float(torch.rand(1, generator=gen)) < p_mix:  # no draw when off
            j = int(torch.randint(0, len(self) - 1, (1,), generator=gen))  # any chip but i
            other_image, other_mask = self._chip(j + (j >= i), gen)
            image, mask = cut_mix(image, mask, other_image, other_mask, gen)
        return image, mask

    def _chip(self, i: int, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Chip ``i`` normalised, nodata masked, and augmented when augmentation is on."""
        img, valid, lab = self.read_valid(i)
        image = torch.from_numpy(normalize_valid(img, self.stats, valid))
        mask = torch.from_numpy(np.where(valid, lab, IGNORE_INDEX).astype(np.int64))
        if self.augment is not None:
            valid_t = torch.from_numpy(valid.copy())
            image, mask = augment_chip(image, mask, valid_t, gen, options=self.augment)
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
        source_band_count: Number of bands of the (first) source image, alpha included
            (None for chip folders written before it was recorded).
        source_alpha_band: 1-based alpha band of the (first) source image, or None.
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
        augment: bool | AugmentOptions | Mapping[str, Any] = True,
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
        self.source_band_count: int | None = m.get("source_band_count")
        self.source_alpha_band: int | None = m.get("source_alpha_band")
        # each chip file carries its own nodata and mask: the manifest's (first image's)
        # nodata must not be applied to the chips of other images
        split = {s: [c for c in m["chips"] if c["split"] == s] for s in ("train", "valid")}
        self.train_ds = ChipDataset(
            self.chip_dir, split["train"], self.stats, augment=augment, seed=seed
        )
        self.valid_ds = ChipDataset(self.chip_dir, split["valid"], self.stats)
        self.train_dl = self._loader(self.train_ds, shuffle=True)
        self.valid_dl = self._loader(self.valid_ds, shuffle=False)
        self._owner: FolderOwner | None = None

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
        """Delete the temporary chip folder once nothing uses it any more.

        This object, its datasets and so its loaders hold the folder's :class:`FolderOwner`;
        the folder goes when the last of them is garbage-collected.
        """
        self._owner = FolderOwner(self.chip_dir)
        self.train_ds.owner = self.valid_ds.owner = self._owner

    @property
    def is_temporary(self) -> bool:
        """True when the chip folder is temporary (removed with this object and its loaders)."""
        return self._owner is not None and self._owner.alive

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
