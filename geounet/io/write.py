"""Atomic outputs and the GeoTIFF / COG writer.

Everything geounet writes goes through :func:`atomic_output`: the data is written to a
temporary name beside the target and renamed at the very end, so an interrupted run never leaves
a half-written file under the final name, and an existing output is only replaced when asked.
:class:`RasterWriter` streams windows into a tiled, compressed, georeferenced GeoTIFF (or a
Cloud-Optimised GeoTIFF with overviews) on top of it. The public names are re-exported by
:mod:`geounet.io.raster`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from affine import Affine
    >>> from rasterio.crs import CRS
    >>> folder = tempfile.TemporaryDirectory()
    >>> out = Path(folder.name) / "o.tif"
    >>> utm, grid = CRS.from_epsg(32616), Affine(0.5, 0, 500000, 0, -0.5, 3700000)
    >>> with RasterWriter(out, 64, 64, 1, "uint8", utm, grid) as w:
    ...     w.write(np.zeros((64, 64), np.uint8), row=0, col=0)
    ...     out.exists()  # not yet: written under a temporary name
    False
    >>> out.exists()
    True
    >>> folder.cleanup()
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geounet.core.classes import classes_tag
from geounet.core.errors import (
    GeounetError,
    InvalidParameterError,
    OutputExistsError,
    OutputLockedError,
    OutputNotWritableError,
)
from geounet.core.types import PathLike, check_choice
from geounet.io.remote import check_local_output

__all__ = [
    "OUTPUT_FORMATS",
    "RasterWriter",
    "WriterOptions",
    "atomic_output",
    "check_writable",
    "lock_path",
    "output_lock",
    "write_raster",
]

#: Raster output formats: a tiled GeoTIFF, or a Cloud-Optimised GeoTIFF with overviews.
OUTPUT_FORMATS: tuple[str, ...] = ("GTiff", "COG")
#: Uncompressed size (bytes, overviews included) above which a GeoTIFF is written as BigTIFF.
#: Classic TIFF offsets stop at 4 GiB; deflate never grows data by more than a fraction of a
#: percent, so below this size a classic TIFF is always safe.
BIGTIFF_THRESHOLD = 3_500_000_000
#: Sidecar files GDAL may write beside a raster (persistent metadata, overviews, masks).
_SIDECARS = (".aux.xml", ".ovr", ".msk", ".aux")
_BLOCK = 512
#: GDAL's DEFLATE level (``WriterOptions.deflate_level``'s default).
DEFAULT_DEFLATE_LEVEL = 6


class _AtomicTarget:
    """A temporary path beside ``target`` that is renamed onto it by :meth:`commit`.

    While it is alive it holds the lock file ``.<name>.lock`` beside the target (created with
    ``O_EXCL``), so that two runs writing the same output at once cannot both succeed: the
    second is refused with :class:`~geounet.core.errors.OutputLockedError`. :meth:`discard`
    releases the lock; a lock left by a killed process is taken over.
    """

    def __init__(
        self,
        target: PathLike,
        overwrite: bool,
        replaceable: Callable[[Path], bool] | None = None,
    ) -> None:
        check_local_output(target)
        self.target, self.overwrite = Path(target), overwrite
        self.replaceable = replaceable
        self._refuse_existing()
        check_writable(self.target)
        tag = uuid.uuid4().hex[:8]
        self.tmp = self.target.with_name(f".{self.target.stem}.tmp-{tag}{self.target.suffix}")
        self.lock = lock_path(self.target)
        self._locked = False
        _acquire_lock(self.lock, self.target)
        self._locked = True

    def _refuse_existing(self) -> None:
        if (self.target.exists() or self.target.is_symlink()) and not self.overwrite:
            raise OutputExistsError(
                f"{self.target}: output already exists; pass overwrite=True (--overwrite) to "
                "replace it or choose another name."
            )
        t, ours = self.target, self.replaceable
        full_folder = t.is_dir() and not t.is_symlink() and any(t.iterdir())
        if full_folder and (ours is None or not ours(t)):
            raise OutputExistsError(
                f"{t}: is a folder that is not this kind of geounet output; refusing to "
                "delete it and what it holds, even with overwrite=True (--overwrite). "
                "Give a new name (a file name for a file output)."
            )

    def commit(self) -> None:
        """Move the temporary output (and its GDAL sidecars) onto the target."""
        if not (self.tmp.exists() or self.tmp.is_symlink()):
            raise FileNotFoundError(f"{self.target}: nothing was written to {self.tmp.name}.")
        self._refuse_existing()  # it may have appeared while we were writing
        target_is_dir = self.target.is_dir() and not self.target.is_symlink()
        if _exists(self.target) and (target_is_dir or self.tmp.is_dir()):
            self._swap_in()  # os.replace cannot put a folder over a path, nor anything over one
        else:
            os.replace(self.tmp, self.target)
        if self.target.is_dir():
            return
        for ext in _SIDECARS:  # sidecars follow the file; stale ones of the old file go
            side, old = _sidecar(self.tmp, ext), _sidecar(self.target, ext)
            if side.exists():
                os.replace(side, old)
            elif old.exists():
                old.unlink()

    def _swap_in(self) -> None:
        """Replace an existing target without a moment when neither old nor new is there.

        The old target is renamed aside, the new one moved in, then the old one deleted. If
        moving the new one in fails (or is interrupted), the old one is put back under its name;
        at worst (the machine stops in between) it survives under the hidden set-aside name.
        """
        t = self.target
        aside = t.with_name(f".{t.stem}.old-{uuid.uuid4().hex[:8]}{t.suffix}")
        try:
            os.replace(t, aside)
            os.replace(self.tmp, t)
        except BaseException:
            if _exists(aside) and not _exists(t):
                os.replace(aside, t)
            raise
        _remove_path(aside)

    def discard(self) -> None:
        """Remove the temporary output and every sidecar GDAL wrote beside it; unlock."""
        _remove_path(self.tmp)
        prefix = self.tmp.name + "."
        with contextlib.suppress(OSError):
            for side in self.tmp.parent.iterdir():  # no glob: names may hold [ or *
                if side.name.startswith(prefix):
                    _remove_path(side)
        if self._locked:
            self._locked = False
            with contextlib.suppress(FileNotFoundError):
                self.lock.unlink()


def lock_path(target: PathLike) -> Path:
    """The lock file of an output: ``.<name>.lock`` beside it."""
    t = Path(target)
    return t.with_name(f".{t.name}.lock")


@contextlib.contextmanager
def output_lock(target: PathLike) -> Iterator[Path]:
    """Hold the lock file of ``target`` (``.<name>.lock`` beside it) for a block.

    The same lock an atomic output holds while it is written: a second run that wants
    ``target`` meanwhile is refused.

    Raises:
        OutputLockedError: Another live process holds the lock.
    """
    lock = lock_path(target)
    _acquire_lock(lock, Path(target))
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _holder(lock: Path) -> int | None:
    """The process id recorded in a lock file, or None when it is unreadable."""
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # being written right now: count it as held
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_lock(lock: Path, target: Path) -> None:
    """Create ``lock`` with O_EXCL and write this process id into it.

    A lock whose process no longer exists (a run killed with SIGKILL) is removed and taken.

    Raises:
        OutputLockedError: A live process holds the lock.
    """
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = _holder(lock)
            if pid == os.getpid() or _alive(pid):
                raise OutputLockedError(
                    f"{target}: another geounet run (process {pid}) is writing this output "
                    f"right now (lock file {lock.name}); wait for it to finish or choose "
                    "another name. If no such run is active, delete the lock file."
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return
    raise OutputLockedError(
        f"{target}: could not take the lock file {lock.name}; another run keeps creating it. "
        "Wait for it to finish or choose another name."
    )


def check_writable(path: PathLike) -> Path:
    """Create the folder of output ``path`` if needed and check that files can be made in it.

    Args:
        path: An output file or folder.

    Returns:
        Its folder.

    Raises:
        OutputNotWritableError: The folder cannot be created, or files cannot be created in
            it (read-only file system, no permission).
    """
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"{path}: cannot create the output folder {folder} ({exc.strerror}); choose an "
            "output in a writable folder."
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputNotWritableError(
            f"{path}: the output folder {folder} is not writable (read-only or no permission); "
            "choose an output in a writable folder."
        )
    return folder


def _exists(path: Path) -> bool:
    """True if ``path`` exists or is a (possibly broken) symbolic link."""
    return path.exists() or path.is_symlink()


def _sidecar(path: Path, ext: str) -> Path:
    return path.with_name(path.name + ext)


def _remove_path(path: Path) -> None:
    """Remove a file, link or folder if it exists (no error when it does not)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(
    path: PathLike,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary name keeps the suffix (drivers pick formats from it) and may be used as a
    file or a folder. On success GDAL sidecars written beside it (``.aux.xml``, ``.ovr``,
    ``.msk``) are renamed with it and stale sidecars of a replaced file are removed. On any
    exception (also ``KeyboardInterrupt``) the temporary file or folder and its sidecars are
    removed and ``path`` is untouched.

    Args:
        path: The final output file or folder.
        overwrite: Replace an existing ``path``. An existing folder that holds anything is
            replaced only where ``replaceable(folder)`` says it is this kind of output (a
            model folder, a chip folder): a user's folder given by mistake is never deleted.
        replaceable: For outputs that are folders: whether an existing folder may be replaced.

    Yields:
        The temporary path to write to.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = tempfile.TemporaryDirectory()
        >>> target = Path(folder.name) / "report.json"
        >>> with atomic_output(target) as tmp:
        ...     _ = tmp.write_text("{}")
        >>> target.read_text()
        '{}'
        >>> folder.cleanup()
    """
    out = _AtomicTarget(path, overwrite, replaceable)
    try:
        yield out.tmp
        out.commit()
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS and not isinstance(exc, GeounetError):
            raise write_failed(path, exc) from exc
        raise
    finally:
        out.discard()


#: errno values of a write that failed for want of space or permission.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def write_failed(path: PathLike, exc: BaseException) -> OutputNotWritableError:
    """The error of an output whose writing failed (disk full, quota, read-only...).

    Args:
        path: The output being written.
        exc: The low-level error (its text and its cause's are quoted).

    Returns:
        An :class:`~geounet.core.errors.OutputNotWritableError` naming the file, the reason
        and the fix.
    """
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = -1
    why = " ".join(str(e).strip() for e in (exc, exc.__cause__) if e is not None)
    if 0 <= free < 1 << 20 or getattr(exc, "errno", None) == errno.ENOSPC:
        why = f"the disk is full ({free} bytes free in {folder}); {why}"
    return OutputNotWritableError(
        f"{path}: writing the output failed ({' '.join(why.split())}); nothing was left "
        "under its name. Free some space or choose an output in another folder, then run "
        "again."
    )


def needs_bigtiff(
    width: int, height: int, count: int, dtype: str, *, overviews: bool = False
) -> bool:
    """Whether a raster must be written as BigTIFF (uncompressed size over the threshold).

    Args:
        width: Columns.
        height: Rows.
        count: Bands.
        dtype: Numpy dtype name.
        overviews: Count the overviews too (about a third more).

    Returns:
        True when the uncompressed data (and overviews) exceed :data:`BIGTIFF_THRESHOLD`.
    """
    size = width * height * count * np.dtype(dtype).itemsize
    if overviews:
        size = size * 4 // 3
    return size > BIGTIFF_THRESHOLD


def _block_size(n: int) -> int:
    """A TIFF tile side (a multiple of 16) no larger than needed for ``n`` pixels, at most 512."""
    return min(_BLOCK, max(16, -(-n // 16) * 16))


def _profile(
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
    *,
    overviews: bool = False,
) -> dict[str, Any]:
    """The GTiff creation profile: tiled, deflate with predictor, BigTIFF when needed.

    Tiles are 512 x 512; a raster smaller than 512 pixels along an axis gets the smallest
    multiple of 16 that holds it, so small rasters are tiled too without wasted space.
    """
    kind = np.dtype(dtype).kind
    big = needs_bigtiff(width, height, count, dtype, overviews=overviews)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": _block_size(width),
        "blockysize": _block_size(height),
        "compress": "deflate",
        "predictor": 3 if kind == "f" else 2,
        "BIGTIFF": "YES" if big else "NO",
    }
    if kind not in "uif":
        profile.pop("predictor")
    if count > 1:
        profile["interleave"] = "pixel"
    return profile


@dataclass(frozen=True)
class WriterOptions:
    """How a raster is written, besides its grid: one object passed to :class:`RasterWriter`.

    :func:`write_raster` takes these as keyword arguments; they are documented here, once.

    Attributes:
        nodata: Nodata value recorded in the file.
        colormap: ``{value: (r, g, b[, a])}`` colour table of band 1 (single-band uint8
            class rasters).
        tags: Dataset tags (a ``CLASSES`` tag marks a class raster: COG overviews then use
            ``MODE`` resampling).
        descriptions: Band descriptions, one per band (None leaves a band undescribed).
        output_format: ``"GTiff"`` (tiled, deflate) or ``"COG"`` (Cloud-Optimised GeoTIFF
            with overviews).
        overwrite: Replace an existing file (refused otherwise).
        deflate_level: DEFLATE level, 1 (fastest) to 9 (smallest); 6 is GDAL's default.
            ``classify``'s probabilities use 3: on a real scene's two-class probabilities
            2.5 times faster to compress than 6, 7 % larger (``benchmarks/README.md``,
            twenty-fourth round).

    Raises:
        InvalidParameterError: ``output_format`` is not one of :data:`OUTPUT_FORMATS`, or
            ``deflate_level`` is not 1-9.

    Example:
        >>> WriterOptions(nodata=255, output_format="COG").output_format
        'COG'
    """

    nodata: float | None = None
    colormap: Mapping[int, Sequence[int]] | None = None
    tags: Mapping[str, str] | None = None
    descriptions: Sequence[str | None] | None = None
    output_format: str = "GTiff"
    overwrite: bool = False
    deflate_level: int = DEFAULT_DEFLATE_LEVEL

    def __post_init__(self) -> None:
        check_choice("output_format", self.output_format, OUTPUT_FORMATS)
        if self.deflate_level not in range(1, 10):
            raise InvalidParameterError(
                f"deflate_level={self.deflate_level!r} is not allowed; use 1 (fastest) to 9 "
                "(smallest)."
            )


class RasterWriter:
    """Stream windows into a new GeoTIFF (or COG) that appears under its name only when complete.

    Use it as a context manager; an exception inside the block leaves no file under ``path``
    and no temporary file beside it. With ``output_format="COG"`` the windows go to a staging
    GeoTIFF that is converted to a Cloud-Optimised GeoTIFF with overviews at the end
    (overviews use ``MODE`` resampling for class rasters, i.e. with a colour table or a
    ``CLASSES`` tag, else ``AVERAGE``).

    Args:
        path: Output file.
        width: Columns.
        height: Rows.
        count: Bands.
        dtype: Numpy dtype name of the bands.
        crs: CRS to record (None: pixel coordinates).
        transform: Affine transform to record.
        options: Nodata, colour table, tags, descriptions, format and overwrite (see
            :class:`WriterOptions`; default: its defaults).

    Raises:
        InvalidParameterError: The grid has no column, row or band.

    Example:
        The writing is not run as a doctest (it needs ``crs``, ``tr`` and ``block``; the
        module's example runs):

        >>> opts = WriterOptions(nodata=255)
        >>> with RasterWriter("o.tif", 100, 100, 1, "uint8", crs, tr, opts) as w:  # doctest: +SKIP
        ...     w.write(block, row=0, col=0)
    """

    def __init__(
        self,
        path: PathLike,
        width: int,
        height: int,
        count: int,
        dtype: str,
        crs: CRS | None,
        transform: Affine,
        options: WriterOptions | None = None,
    ) -> None:
        opts = options or WriterOptions()
        if width < 1 or height < 1 or count < 1:
            raise InvalidParameterError(
                f"{path}: a raster needs at least 1 column, row and band, got "
                f"{width} x {height} x {count}."
            )
        self.path = Path(path)
        cog = opts.output_format == "COG"
        self.profile = _profile(
            width, height, count, dtype, crs, transform, opts.nodata, overviews=cog
        )
        if opts.deflate_level != DEFAULT_DEFLATE_LEVEL:
            self.profile["zlevel"] = opts.deflate_level
        self.colormap, self.tags = opts.colormap, dict(opts.tags or {})
        self.descriptions = opts.descriptions
        self.output_format, self.overwrite = opts.output_format, opts.overwrite
        self._out: _AtomicTarget | None = None
        self._stage: Path | None = None
        self._dst: Any = None

    def __enter__(self) -> RasterWriter:
        self._out = _AtomicTarget(self.path, self.overwrite)
        tmp = self._out.tmp
        self._stage = tmp.with_name(tmp.stem + ".stage.tif") if self._cog else tmp
        try:
            self._dst = rasterio.open(self._stage, "w", **self.profile)
            if self.colormap:
                self._dst.write_colormap(1, {int(k): tuple(v) for k, v in self.colormap.items()})
            if self.tags:
                self._dst.update_tags(**{str(k): str(v) for k, v in self.tags.items()})
            for i, d in enumerate(self.descriptions or (), start=1):
                if d is not None:
                    self._dst.set_band_description(i, d)
        except BaseException:
            self._cleanup(committed=False)
            raise
        return self

    @property
    def _cog(self) -> bool:
        return self.output_format == "COG"

    def write(
        self, data: np.ndarray, row: int, col: int, *, valid: np.ndarray | None = None
    ) -> None:
        """Write ``data`` (``(bands, h, w)`` or ``(h, w)``) with its top-left at ``(row, col)``.

        ``valid`` (``(h, w)`` bool) is written into the file's mask (GDAL's per-dataset mask
        band, inside the TIFF; a COG keeps it): for rasters whose every value is a valid
        value, where a nodata value cannot mark the pixels without data. A writer given
        ``valid`` once must be given it for every window (unwritten mask blocks read as
        invalid).

        Raises:
            RuntimeError: When called outside the ``with`` block.
        """
        if self._dst is None:
            raise RuntimeError("RasterWriter.write() was called outside its with-block.")
        arr = data[None] if data.ndim == 2 else data
        win = Window(col, row, arr.shape[-1], arr.shape[-2])
        try:
            self._dst.write(arr.astype(self.profile["dtype"], copy=False), window=win)
            if valid is not None:
                self._dst.write_mask(np.where(valid, np.uint8(255), np.uint8(0)), window=win)
        except (OSError, RasterioError, CPLE_BaseError) as exc:
            raise write_failed(self.path, exc) from exc

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        committed = False
        try:
            dst, self._dst = self._dst, None
            if dst is not None:
                dst.close()
            if exc_type is None and self._out is not None and self._stage is not None:
                if self._cog:
                    _to_cog(self._stage, self._out.tmp, self.profile, self._categorical)
                    _discard_path(self._stage)
                self._out.commit()
                committed = True
        except (OSError, RasterioError, CPLE_BaseError) as err:
            if exc_type is not None or isinstance(err, GeounetError):
                raise
            raise write_failed(self.path, err) from err
        finally:
            self._cleanup(committed)

    @property
    def _categorical(self) -> bool:
        return bool(self.colormap) or "CLASSES" in self.tags

    def _cleanup(self, committed: bool) -> None:
        if self._dst is not None:
            with contextlib.suppress(Exception):
                self._dst.close()
            self._dst = None
        if self._stage is not None and self._out is not None and self._stage != self._out.tmp:
            _discard_path(self._stage)
        if self._out is not None:
            self._out.discard()  # after a commit only leftovers (none) are removed


def _discard_path(path: Path) -> None:
    """Remove ``path`` and the GDAL sidecars beside it."""
    _remove_path(path)
    for ext in _SIDECARS:
        _remove_path(_sidecar(path, ext))


def _to_cog(src_path: Path, dst_path: Path, profile: Mapping[str, Any], categorical: bool) -> None:
    """Convert the staging GeoTIFF to a COG (512 blocks, deflate, overviews)."""
    resampling = "MODE" if categorical else "AVERAGE"
    kind = np.dtype(profile["dtype"]).kind
    predictor = "NO" if categorical or kind not in "uif" else "YES"
    with rasterio.open(src_path) as src:
        rasterio.shutil.copy(
            src,
            dst_path,
            driver="COG",
            compress="DEFLATE",
            predictor=predictor,
            level=profile.get("zlevel", DEFAULT_DEFLATE_LEVEL),
            blocksize=_BLOCK,
            overview_resampling=resampling,
            bigtiff=profile["BIGTIFF"],
        )


def write_raster(
    path: PathLike,
    array: np.ndarray,
    crs: CRS | None,
    transform: Affine,
    *,
    nodata: float | None = None,
    colormap: Mapping[int, Sequence[int]] | None = None,
    class_names: Mapping[int, str] | None = None,
    descriptions: Sequence[str | None] | None = None,
    tags: Mapping[str, str] | None = None,
    output_format: str = "GTiff",
    overwrite: bool = False,
) -> Path:
    """Write a whole array as a tiled, compressed, georeferenced GeoTIFF (atomically).

    Args:
        path: Output file.
        array: ``(bands, h, w)`` or ``(h, w)``.
        crs: CRS to record.
        transform: Affine transform to record.
        nodata: See :class:`WriterOptions`.
        colormap: See :class:`WriterOptions`.
        class_names: ``{value: name}``, stored as the ``CLASSES`` JSON tag.
        descriptions: See :class:`WriterOptions`.
        tags: See :class:`WriterOptions` (``class_names`` adds the ``CLASSES`` tag).
        output_format: See :class:`WriterOptions`.
        overwrite: See :class:`WriterOptions`.

    Returns:
        The written path.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        InvalidParameterError: Bad ``output_format`` or an array that is not 2D or 3D.
    """
    if array.ndim not in (2, 3):
        raise InvalidParameterError(
            f"{path}: the array must be (bands, rows, cols) or (rows, cols), got shape "
            f"{array.shape}."
        )
    arr = array[None] if array.ndim == 2 else array
    all_tags = dict(tags or {})
    if class_names:
        all_tags["CLASSES"] = classes_tag(class_names)
    options = WriterOptions(nodata, colormap, all_tags, descriptions, output_format, overwrite)
    count, height, width = arr.shape
    with RasterWriter(path, width, height, count, str(arr.dtype), crs, transform, options) as w:
        w.write(arr, 0, 0)
    return Path(path)
