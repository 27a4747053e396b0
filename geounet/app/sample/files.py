"""Writing the sample data: the GeoTIFFs, GeoPackages and quicklook, and the entry points.

:func:`generate_sample_data` makes both scenes (:mod:`geounet.app.sample.scene`,
:mod:`geounet.app.sample.render`) and writes them georeferenced; :func:`ensure_sample_data`
finds or regenerates them; :func:`main` is ``python -m geounet.app.sample``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS

from geounet.app.sample.render import _render, _to_dn
from geounet.app.sample.scene import EXTENT, RES, SIZE, _make_scene, _Scene
from geounet.core.classes import classes_to_json, colormap, make_classes
from geounet.core.errors import OutputExistsError
from geounet.core.paths import user_data_dir
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.io.raster import atomic_output, write_raster
from geounet.viz.bands import rgb_bands

EPSG = 32616  #: WGS 84 / UTM zone 16N
#: Bottom-left corner of each scene (easting, northing), whole metres.
ORIGINS = {"train": (500_000.0, 3_800_000.0), "test": (501_000.0, 3_800_000.0)}
NODATA_STRIP = 40  #: width in pixels of the nodata strip along the east edge of test.tif
BANDS = ("blue", "green", "red", "nir")
DEFAULT_SEED = 16118
#: Keys returned by :func:`generate_sample_data` and their file names.
SAMPLE_FILES = {
    "train": "train.tif",
    "train_labels": "train_labels.tif",
    "train_buildings": "train_buildings.gpkg",
    "train_roads": "train_roads.gpkg",
    "test": "test.tif",
    "test_labels": "test_labels.tif",
    "test_buildings": "test_buildings.gpkg",
    "test_roads": "test_roads.gpkg",
}
QUICKLOOK = "quicklook.png"


def _scene_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if name == "train" else 1])


def _make(seed: int, name: str) -> tuple[np.ndarray, np.ndarray, _Scene]:
    """The uint16 image, the uint8 labels and the geometry of one scene."""
    rng = _scene_rng(seed, name)
    scene = _make_scene(rng)
    refl, labels = _render(rng, scene)
    image = _to_dn(rng, refl)
    if name == "test":
        image[:, :, SIZE - NODATA_STRIP :] = 0
        labels[:, SIZE - NODATA_STRIP :] = IGNORE_INDEX
    return image, labels, scene


def _to_map(coords: np.ndarray, name: str) -> np.ndarray:
    return coords + np.asarray(ORIGINS[name])


def _write_vectors(scene: _Scene, name: str, paths: dict[str, Path], overwrite: bool) -> None:
    import geopandas as gpd

    crs = f"EPSG:{EPSG}"
    buildings = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(scene.buildings) + 1, dtype=np.int32),
            "height_m": [round(b.height, 1) for b in scene.buildings],
            "roof": [b.roof for b in scene.buildings],
            "shape": [b.shape for b in scene.buildings],
        },
        geometry=[shapely.Polygon(_to_map(b.outline, name)) for b in scene.buildings],
        crs=crs,
    )
    roads = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(scene.roads) + 1, dtype=np.int32),
            "width": [r.width for r in scene.roads],
            "kind": [r.kind for r in scene.roads],
        },
        geometry=[shapely.LineString(_to_map(r.coords, name)) for r in scene.roads],
        crs=crs,
    )
    for key, gdf, layer in (
        (f"{name}_buildings", buildings, "buildings"),
        (f"{name}_roads", roads, "roads"),
    ):
        with atomic_output(paths[key], overwrite=overwrite) as tmp:
            gdf.to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio")


def _write_rasters(
    image: np.ndarray, labels: np.ndarray, name: str, paths: dict[str, Path], overwrite: bool
) -> None:
    x0, y0 = ORIGINS[name]
    transform = Affine(RES, 0.0, x0, 0.0, -RES, y0 + EXTENT)
    crs = CRS.from_epsg(EPSG)
    classes = make_classes({1: "building", 2: "road"})
    tags = {"SOURCE": "synthetic scene from geounet.app.sample", "SCENE": name}
    class_tags = {**tags, "GEOUNET_CLASSES": json.dumps(classes_to_json(classes))}
    write_raster(paths[name], image, crs, transform, nodata=0, descriptions=BANDS, tags=tags,
                 overwrite=overwrite)  # fmt: skip
    write_raster(
        paths[f"{name}_labels"],
        labels,
        crs,
        transform,
        nodata=IGNORE_INDEX,
        colormap=colormap(classes),
        class_names={i: c.name for i, c in enumerate(classes)},
        tags=class_tags,
        overwrite=overwrite,
    )


def _stretch(image: np.ndarray) -> np.ndarray:
    rgb = image[[b - 1 for b in rgb_bands(BANDS)]].astype(np.float64)
    valid = np.all(image > 0, axis=0)
    out = np.zeros((*rgb.shape[1:], 3))
    for i in range(3):
        lo, hi = np.percentile(rgb[i][valid], [2, 98])
        out[..., i] = np.clip((rgb[i] - lo) / (hi - lo), 0, 1)
    out[~valid] = 0.0
    return out


def _quicklook(
    path: Path, scenes: dict[str, tuple[np.ndarray, np.ndarray]], overwrite: bool
) -> None:
    """Each scene as RGB (2-98 % stretch) beside its labels, as a PNG (own Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    cmap = ListedColormap(["#d9d9d9", "#E6194B", "#FFE119", "#000000"])
    fig = Figure(figsize=(12, 12), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for row, (name, (image, labels)) in zip(axes, scenes.items()):
        row[0].imshow(_stretch(image), interpolation="antialiased")
        lab = np.where(labels == IGNORE_INDEX, 3, labels)
        row[1].imshow(lab, cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
        row[0].set_title(f"{name}.tif (RGB, 2-98 % stretch)")
        row[1].set_title(f"{name}_labels.tif: building red, road yellow, nodata black")
        for ax in row:
            ax.set_axis_off()
    fig.tight_layout()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")


def _targets(out: Path, quicklook: bool) -> dict[str, Path]:
    paths = {k: out / v for k, v in SAMPLE_FILES.items()}
    if quicklook:
        paths["quicklook"] = out / QUICKLOOK
    return paths


def generate_sample_data(
    out_dir: PathLike,
    *,
    overwrite: bool = False,
    seed: int = DEFAULT_SEED,
    quicklook: bool = True,
) -> dict[str, Path]:
    """Write the synthetic sample scenes, their labels and vectors into ``out_dir``.

    Files: ``train.tif`` and ``test.tif`` (1024 x 1024, 4 bands uint16 blue/green/red/nir,
    0.5 m, EPSG:32616, nodata 0, a 40-pixel nodata strip along the east edge of the test
    scene), ``*_labels.tif`` (uint8: 0 background, 1 building, 2 road, 255 nodata; colour
    table and class names), ``*_buildings.gpkg`` (polygons) and ``*_roads.gpkg`` (centre
    lines with ``width`` in metres), and ``quicklook.png``.

    Args:
        out_dir: Folder to write into (created if needed).
        overwrite: Replace existing files; without it nothing is written if any exists.
        seed: Seed of the scenes; the same seed gives identical pixels and features.
        quicklook: Also draw ``quicklook.png`` (needs matplotlib).

    Returns:
        ``{key: path}`` with the keys of :data:`SAMPLE_FILES` (and ``"quicklook"``).

    Raises:
        OutputExistsError: A file exists and ``overwrite`` is False.

    Example:
        Not run as a doctest: it writes the sample scenes, which takes seconds.

        >>> paths = generate_sample_data(tmp_dir)                    # doctest: +SKIP
        >>> paths["train"].name                                       # doctest: +SKIP
        'train.tif'
    """
    out = Path(out_dir)
    paths = _targets(out, quicklook)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out}: sample files already exist ({', '.join(existing)}); pass overwrite=True "
            "(--overwrite) to replace them or choose another folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in ("train", "test"):
        image, labels, scene = _make(seed, name)
        _write_rasters(image, labels, name, paths, overwrite)
        _write_vectors(scene, name, paths, overwrite)
        arrays[name] = (image, labels)
    if quicklook:
        _quicklook(paths["quicklook"], arrays, overwrite)
    return paths


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in SAMPLE_FILES.values())


def ensure_sample_data(dir: PathLike | None = None) -> Path:
    """The folder holding the sample data, generated there first if any file is missing.

    Args:
        dir: Folder to use. By default the ``sample_data/`` folder of a source checkout if it
            is complete, else ``<user data dir>/sample_data`` (see
            :func:`geounet.core.paths.user_data_dir`).

    Returns:
        The folder, with every file of :data:`SAMPLE_FILES` present.
    """
    if dir is None:
        checkout = Path(__file__).resolve().parents[3] / "sample_data"
        if _complete(checkout):
            return checkout
        dir = user_data_dir() / "sample_data"
    folder = Path(dir)
    if not _complete(folder):
        generate_sample_data(folder, overwrite=True, quicklook=False)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geounet.app.sample OUT_DIR [--overwrite] [--seed N] [--no-quicklook]``."""
    parser = argparse.ArgumentParser(
        prog="python -m geounet.app.sample",
        description="Generate the deterministic synthetic sample scenes, labels and vectors.",
    )
    parser.add_argument("out_dir", help="folder to write into, e.g. sample_data")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="scene seed")
    parser.add_argument("--no-quicklook", action="store_true", help="skip quicklook.png")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        paths = generate_sample_data(
            args.out_dir, overwrite=args.overwrite, seed=args.seed, quicklook=not args.no_quicklook
        )
    except OutputExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths.values():
        print(p)
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
