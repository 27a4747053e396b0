"""The bad-input corpus: every case through the Python API and through ``geounet`` (CliRunner).

Each case is one entry of :data:`CASES`: a builder that writes its inputs into a fresh folder
and returns a :class:`Call` (the API call, the command-line arguments, the expected
:class:`~geounet.core.errors.GeounetError` subclass, the words the message must hold: the file
and the fix, and the outputs that must not exist afterwards). A few entries are inputs that
look bad but must work (a label raster on another grid, a self-intersecting polygon, NaN
pixels, an all-nodata raster, a 20x20 raster, a missing output folder); those check the result.

In the CLI every error must be exit code 2 with exactly one line on stderr, and the error
raised inside the command must be the expected subclass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import write_geotiff
from shapely.geometry import Polygon, box

from geounet.cli.main import cli
from geounet.core import errors as E  # noqa: N812 - short name for the table
from geounet.model.files import CONFIG_FILE, WEIGHTS_FILE

UTM = "EPSG:32616"
X0, Y0, RES = 500000.0, 3700000.0, 0.5  # a 64 x 64 image covers 32 m x 32 m from here
CLASSIFY_OPTS = ["--tile-size", "64", "--overlap", "16"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved, untrained 3-band paper U-Net (4 channels, depth 2): fast to run."""
    from model_fakes import make_fake_data

    from geounet.app.classifier import UnetClassifier

    data = make_fake_data(bands=3, chip=32, size=64)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    return model.save(tmp_path_factory.mktemp("models") / "tiny")


@dataclass
class Env:
    """What a case builder gets: its own folder and the shared tiny model."""

    root: Path
    model: Path

    def raster(
        self,
        array: np.ndarray,
        name: str = "img.tif",
        *,
        crs: str | None = UTM,
        origin: tuple[float, float] = (X0, Y0),
        res: float = RES,
        nodata: float | None = None,
    ) -> Path:
        """Write a GeoTIFF (bands, h, w) or (h, w) into the case folder."""
        return write_geotiff(self.root / name, array, crs, res, origin, nodata)

    def image(self, name: str = "img.tif", size: int = 64, bands: int = 3) -> Path:
        """A textured uint8 image with the model's 3 bands."""
        rng = np.random.default_rng(0)
        return self.raster(rng.integers(40, 200, (bands, size, size), dtype=np.uint8), name)

    def labels(self, name: str = "labels.tif", value: int = 1, **kw: Any) -> Path:
        """A label raster on the image grid with a square of ``value``."""
        lab = np.zeros((64, 64), np.uint8)
        lab[8:40, 8:40] = value
        return self.raster(lab, name, **kw)

    def vector(
        self, geoms: Sequence[Any], name: str = "labels.gpkg", crs: str | None = UTM, **columns: Any
    ) -> Path:
        """A GeoPackage of ``geoms`` with a ``class`` column (1 for every feature)."""
        data = {"class": [1] * len(geoms), **columns}
        frame = gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)
        path = self.root / name
        frame.to_file(path, driver="GPKG")
        return path

    def model_copy(self) -> Path:
        """A copy of the tiny model to damage."""
        return Path(shutil.copytree(self.model, self.root / "model"))

    def edit_config(self, **changes: Any) -> Path:
        """A model copy whose geounet.json has ``changes``; returns the folder."""
        folder = self.model_copy()
        meta = json.loads((folder / CONFIG_FILE).read_text())
        meta.update(changes)
        (folder / CONFIG_FILE).write_text(json.dumps(meta))
        return folder


def _inside(fraction: float = 0.5) -> Polygon:
    """A square inside the image's 32 m x 32 m footprint."""
    a, b = X0 + 4, X0 + 4 + 24 * fraction
    return box(a, Y0 - 4 - 24 * fraction, b, Y0 - 4)


@dataclass
class Call:
    """One case: how to run it, what it must raise, and which outputs must not appear."""

    api: Callable[[], Any]
    cli: list[str]
    error: type[E.GeounetError] | None
    names: Sequence[str]
    fix: Sequence[str]
    outputs: Sequence[Path] = ()
    check: Callable[[], None] | None = None
    leftovers: Sequence[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------- runners


def _classify(
    env: Env,
    image: Path,
    error: type[E.GeounetError] | None,
    names: Sequence[str],
    fix: Sequence[str],
    *,
    model: Path | None = None,
    opts: Sequence[str] = (),
    out: Path | None = None,
    **api_opts: Any,
) -> Call:
    """A classify case: UnetClassifier.from_model(...).classify and ``geounet classify``."""
    from geounet.app.classifier import UnetClassifier

    model = model or env.model
    out = out or env.root / "out.tif"
    kw = {"tile_size": 64, "overlap": 16, "progress": False, **api_opts}

    def api() -> Any:
        return UnetClassifier.from_model(model).classify(image, out, **kw)

    args = ["classify", str(image), "--model", str(model), "--out", str(out)]
    return Call(api, [*args, *CLASSIFY_OPTS, *opts], error, names, fix, [out])


def _prepare(
    env: Env,
    image: Path,
    labels: Path | None,
    error: type[E.GeounetError] | None,
    names: Sequence[str],
    fix: Sequence[str],
    *,
    classes: str = "1=building",
    opts: Sequence[str] = (),
    **api_opts: Any,
) -> Call:
    """A prepare case: prepare_data(...) and ``geounet prepare``."""
    from geounet.core.classes import parse_classes
    from geounet.data.prepare import prepare_data

    out = env.root / "chips"
    kw = {"chip_size": 32, "classes": parse_classes(classes), "out_dir": out, **api_opts}

    def api() -> Any:
        return prepare_data(image, labels, **kw)

    args = ["prepare", str(image), "--out", str(out), "--chip-size", "32", "--classes", classes]
    args += ["--labels", str(labels)] if labels else []
    return Call(api, [*args, *opts], error, names, fix, [out])


def _vectorize(
    env: Env,
    classified: Path,
    error: type[E.GeounetError] | None,
    names: Sequence[str],
    fix: Sequence[str],
    *,
    out: Path | None = None,
) -> Call:
    """A vectorize case: vectorize(...) and ``geounet vectorize``."""
    from geounet.vectorizing.pipeline import vectorize

    out = out or env.root / "out.gpkg"

    def api() -> Any:
        return vectorize(classified, out, classes={1: "building"})

    args = ["vectorize", str(classified), "--out", str(out), "--classes", "1=building"]
    return Call(api, args, error, names, fix, [out])


def _chip_folder(env: Env) -> Path:
    """A chip folder written by prepare_data."""
    from geounet.data.prepare import prepare_data

    out = env.root / "chips"
    prepare_data(env.image(), env.labels(), classes=["building"], chip_size=32, out_dir=out)
    return out


def _train(
    env: Env, chips: Path, error: type[E.GeounetError], names: Sequence[str], fix: Sequence[str]
) -> Call:
    """A train case on a chip folder: prepare_data(folder) + fit, and ``geounet train``."""
    from geounet.app.classifier import UnetClassifier
    from geounet.data.prepare import prepare_data

    out = env.root / "trained"

    def api() -> Any:
        model = UnetClassifier(prepare_data(chips), backbone=None, base_channels=4, depth=2)
        model.fit(epochs=1, lr=1e-3, progress=False)
        return model.save(out)

    args = ["train", str(chips), "--out", str(out), "--backbone", "unet-classic"]
    args += ["--weights", "none", "--epochs", "1", "--lr", "1e-3", "--batch-size", "2"]
    return Call(api, args, error, names, fix, [out])


def _edit_manifest(chips: Path, **record: str) -> Path:
    """Change the first chip record of a chip folder's manifest."""
    path = chips / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["chips"][0].update(record)
    path.write_text(json.dumps(manifest))
    return chips


# ----------------------------------------------------------------------------- the cases
# fmt: off
FIX_MODEL = ("UnetClassifier.save",)
BAND_FIX = ("model's bands",)


def c_missing_image(env: Env) -> Call:
    return _classify(env, env.root / "absent.tif", E.InputNotFoundError, ["absent.tif"],
                     ["check the path"])


def c_directory_image(env: Env) -> Call:
    (env.root / "folder.tif").mkdir()
    return _classify(env, env.root / "folder.tif", E.InvalidRasterError, ["folder.tif"],
                     ["folder", "raster file"])


def c_text_named_tif(env: Env) -> Call:
    path = env.root / "notes.tif"
    path.write_text("these are my notes, not a raster\n")
    return _classify(env, path, E.InvalidRasterError, ["notes.tif"], ["GeoTIFF"])


def c_empty_file_tif(env: Env) -> Call:
    path = env.root / "empty.tif"
    path.write_bytes(b"")
    return _classify(env, path, E.InvalidRasterError, ["empty.tif"], ["GeoTIFF"])


def c_truncated_geotiff(env: Env) -> Call:
    path = env.image("cut.tif")
    path.write_bytes(path.read_bytes()[:100])
    return _classify(env, path, E.InvalidRasterError, ["cut.tif"], ["copy", "again"])


def c_raster_without_crs(env: Env) -> Call:
    path = env.raster(np.full((3, 64, 64), 90, np.uint8), "nocrs.tif", crs=None)
    return _classify(env, path, E.MissingCRSError, ["nocrs.tif"], ["allow-no-crs|allow_no_crs"])


def c_one_band_for_3band_model(env: Env) -> Call:
    path = env.raster(np.full((64, 64), 90, np.uint8), "gray.tif")
    return _classify(env, path, E.BandMismatchError, ["gray.tif"], (*BAND_FIX, "--bands 1,1,1"))


def c_tile_not_multiple_of_32(env: Env) -> Call:
    return _classify(env, env.image(), E.InvalidParameterError, ["tile_size|tile-size"],
                     ["multiple of 32"], opts=["--tile-size", "100"], tile_size=100)


def c_negative_overlap(env: Env) -> Call:
    return _classify(env, env.image(), E.InvalidParameterError, ["overlap"], ["0"],
                     opts=["--overlap", "-8"], overlap=-8)


def c_overlap_ge_tile(env: Env) -> Call:
    return _classify(env, env.image(), E.InvalidParameterError, ["overlap"], ["tile_size / 2"],
                     opts=["--overlap", "64"], overlap=64)


def c_batch_size_zero(env: Env) -> Call:
    return _classify(env, env.image(), E.InvalidParameterError, ["batch.size"], ["1 or more|1<=x"],
                     opts=["--batch-size", "0"], batch_size=0)


def c_unknown_blend(env: Env) -> Call:
    return _classify(env, env.image(), E.InvalidParameterError, ["blend"], ["spline"],
                     opts=["--blend", "gaussian"], blend="gaussian")


def c_probabilities_is_output(env: Env) -> Call:
    out = env.root / "out.tif"
    return _classify(env, env.image(), E.InvalidParameterError, ["out.tif"], ["another name"],
                     opts=["--probabilities", str(out)], probabilities=out)


def c_corrupt_safetensors(env: Env) -> Call:
    folder = env.model_copy()
    blob = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(blob[: len(blob) // 2])
    return _classify(env, env.image(), E.ModelFileError, [WEIGHTS_FILE], FIX_MODEL, model=folder)


def c_unknown_schema_version(env: Env) -> Call:
    folder = env.edit_config(schema_version=99)
    return _classify(env, env.image(), E.ModelFileError, [CONFIG_FILE], ["upgrade geounet"],
                     model=folder)


def c_missing_model(env: Env) -> Call:
    return _classify(env, env.image(), E.ModelFileError, ["nomodel"], FIX_MODEL,
                     model=env.root / "nomodel")


def c_pickle_model_file(env: Env) -> Call:
    from model_fakes import write_crafted_pickle

    path = write_crafted_pickle(env.root / "model.pkl", env.root / "pwned")
    call = _classify(env, env.image(), E.ModelFileError, ["model.pkl"], ["safetensors"],
                     model=path)
    call.leftovers = [env.root / "pwned"]
    return call


def c_pickle_as_pt_zip(env: Env) -> Call:
    from model_fakes import write_crafted_pickle

    path = write_crafted_pickle(env.root / "model.pt", env.root / "pwned", torch_format=True)
    call = _classify(env, env.image(), E.ModelFileError, ["model.pt"], ["safetensors"],
                     model=path)
    call.leftovers = [env.root / "pwned"]
    return call


def c_pickle_renamed_safetensors(env: Env) -> Call:
    from model_fakes import write_crafted_pickle

    folder = env.model_copy()
    write_crafted_pickle(folder / WEIGHTS_FILE, env.root / "pwned")
    call = _classify(env, env.image(), E.ModelFileError, [WEIGHTS_FILE], ["safetensors"],
                     model=folder)
    call.leftovers = [env.root / "pwned"]
    return call


def c_json_in_channels_wrong_type(env: Env) -> Call:
    folder = env.edit_config(in_channels="three")
    return _classify(env, env.image(), E.ModelFileError, [CONFIG_FILE, "in_channels"],
                     FIX_MODEL, model=folder)


def c_json_in_channels_zero(env: Env) -> Call:
    folder = env.edit_config(in_channels=0)
    return _classify(env, env.image(), E.ModelFileError, [CONFIG_FILE, "in_channels"],
                     FIX_MODEL, model=folder)


def c_json_classes_wrong_type(env: Env) -> Call:
    folder = env.edit_config(classes="building")
    return _classify(env, env.image(), E.ModelFileError, [CONFIG_FILE, "classes"], FIX_MODEL,
                     model=folder)


def c_json_stats_length(env: Env) -> Call:
    folder = env.edit_config(stats={"mean": [1.0], "std": [1.0], "p2": [0.0], "p98": [1.0]})
    return _classify(env, env.image(), E.ModelFileError, [CONFIG_FILE, "stats"], FIX_MODEL,
                     model=folder)


def c_json_negative_std(env: Env) -> Call:
    folder = env.edit_config(stats={"mean": [1.0] * 3, "std": [0.0, -1.0, 1.0]})
    return _classify(env, env.image(), E.ModelFileError, [CONFIG_FILE, "std"], FIX_MODEL,
                     model=folder)


def c_existing_output(env: Env) -> Call:
    out = env.root / "out.tif"
    out.write_bytes(b"precious")
    call = _classify(env, env.image(), E.OutputExistsError, ["out.tif"], ["overwrite"])
    call.outputs = []
    call.check = lambda: _assert_equal(out.read_bytes(), b"precious")
    return call


def c_read_only_output_folder(env: Env) -> Call:
    folder = env.root / "ro"
    folder.mkdir()
    _mount_read_only(folder)
    return _classify(env, env.image(), E.OutputNotWritableError, ["ro"], ["writable"],
                     out=folder / "out.tif")


def c_labels_do_not_overlap(env: Env) -> Call:
    lab = env.labels(origin=(X0 + 5000, Y0))
    return _prepare(env, env.image(), lab, E.CRSMismatchError, ["labels.tif", "img.tif"],
                    ["overlap"])


def c_label_values_outside_classes(env: Env) -> Call:
    lab = env.labels(value=7)
    return _prepare(env, env.image(), lab, E.LabelError, ["labels.tif", "7"], ["classes"])


def c_vector_no_features(env: Env) -> Call:
    lab = env.vector([], "none.gpkg")
    return _prepare(env, env.image(), lab, E.LabelError, ["none.gpkg"], ["features"])


def c_vector_only_empty_geometries(env: Env) -> Call:
    lab = env.vector([Polygon(), Polygon()], "empty.gpkg")
    return _prepare(env, env.image(), lab, E.LabelError, ["empty.gpkg"], ["geometr"])


def c_vector_without_crs(env: Env) -> Call:
    lab = env.vector([_inside()], "nocrs.gpkg", crs=None)
    return _prepare(env, env.image(), lab, E.MissingCRSError, ["nocrs.gpkg"], ["CRS"])


def c_wrong_label_field(env: Env) -> Call:
    lab = env.vector([_inside()], "fields.gpkg")
    return _prepare(env, env.image(), lab, E.LabelError, ["fields.gpkg", "kind"], ["class"],
                    opts=["--label-field", "kind"], label_field="kind")


def c_missing_labels(env: Env) -> Call:
    return _prepare(env, env.image(), env.root / "nolabels.gpkg", E.InputNotFoundError,
                    ["nolabels.gpkg"], ["check the path"])


def c_raster_20x20_no_chips(env: Env) -> Call:
    img = env.image("small.tif", size=20)
    lab = env.raster(np.ones((20, 20), np.uint8), "small_labels.tif")
    return _prepare(env, img, lab, E.NoChipsError, ["small.tif"], ["chip.size"])


def c_chip_size_not_multiple_of_32(env: Env) -> Call:
    return _prepare(env, env.image(), env.labels(), E.InvalidParameterError, ["chip_size"],
                    ["multiple of 32"], opts=["--chip-size", "48"], chip_size=48)


def c_manifest_missing_chip(env: Env) -> Call:
    chips = _chip_folder(env)
    (chips / json.loads((chips / "manifest.json").read_text())["chips"][0]["image"]).unlink()
    return _train(env, chips, E.InputNotFoundError, ["manifest.json", "images/"],
                  ["prepare"])


def c_manifest_path_escapes(env: Env) -> Call:
    chips = _edit_manifest(_chip_folder(env), image="../img.tif")
    return _train(env, chips, E.InvalidParameterError, ["manifest.json", "../img.tif"],
                  ["inside"])


def c_manifest_absolute_path(env: Env) -> Call:
    chips = _chip_folder(env)
    _edit_manifest(chips, label=str(env.root / "labels.tif"))
    return _train(env, chips, E.InvalidParameterError, ["manifest.json", "labels.tif"],
                  ["inside"])


def c_vectorize_missing_input(env: Env) -> Call:
    return _vectorize(env, env.root / "absent.tif", E.InputNotFoundError, ["absent.tif"],
                      ["check the path"])


def c_vectorize_text_file(env: Env) -> Call:
    path = env.root / "classes.tif"
    path.write_text("not a raster")
    return _vectorize(env, path, E.InvalidRasterError, ["classes.tif"], ["GeoTIFF"])


def c_vectorize_existing_output(env: Env) -> Call:
    out = env.root / "out.gpkg"
    out.write_bytes(b"precious")
    call = _vectorize(env, env.labels(), E.OutputExistsError, ["out.gpkg"], ["overwrite"])
    call.outputs = []
    call.check = lambda: _assert_equal(out.read_bytes(), b"precious")
    return call


# --- inputs that look bad but must work


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def s_labels_on_another_grid(env: Env) -> Call:
    lab = np.zeros((40, 40), np.uint8)
    lab[4:24, 4:24] = 1
    lab_path = env.raster(lab, "coarse.tif", res=1.0, origin=(X0 - 4, Y0 + 4))
    call = _prepare(env, env.image(), lab_path, None, [], [])
    call.check = lambda: _assert_chips(env.root / "chips")
    return call


def s_self_intersecting_polygon(env: Env) -> Call:
    bowtie = Polygon([(X0 + 2, Y0 - 2), (X0 + 30, Y0 - 30), (X0 + 30, Y0 - 2),
                      (X0 + 2, Y0 - 30)])
    assert not bowtie.is_valid
    call = _prepare(env, env.image(), env.vector([bowtie], "bowtie.gpkg"), None, [], [])
    call.check = lambda: _assert_chips(env.root / "chips")
    return call


def s_some_empty_geometries(env: Env) -> Call:
    lab = env.vector([_inside(), Polygon()], "some_empty.gpkg")
    call = _prepare(env, env.image(), lab, None, [], [])
    call.check = lambda: _assert_chips(env.root / "chips")
    return call


def s_nan_pixels_are_nodata(env: Env) -> Call:
    arr = np.random.default_rng(1).uniform(40, 200, (3, 64, 64)).astype(np.float32)
    arr[:, 10:20, 30:50] = np.nan
    path = env.raster(arr, "float.tif")
    call = _classify(env, path, None, [], [])
    out = env.root / "out.tif"

    def check() -> None:
        classes = _read(out)
        assert (classes[10:20, 30:50] == 255).all()
        assert (np.delete(classes, np.s_[10:20], axis=0) != 255).all()

    call.check = check
    return call


def s_all_nodata(env: Env) -> Call:
    path = env.raster(np.zeros((3, 64, 64), np.uint8), "blank.tif", nodata=0)
    call = _classify(env, path, None, [], [])
    call.check = lambda: _assert_equal(np.unique(_read(env.root / "out.tif")).tolist(), [255])
    return call


def s_raster_20x20(env: Env) -> Call:
    call = _classify(env, env.image("small.tif", size=20), None, [], [])
    call.check = lambda: _assert_equal(_read(env.root / "out.tif").shape, (20, 20))
    return call


def s_output_folder_created(env: Env) -> Call:
    out = env.root / "new" / "deeper" / "out.tif"
    call = _classify(env, env.image(), None, [], [], out=out)
    call.check = lambda: _assert_equal(_read(out).shape, (64, 64))
    return call
# fmt: on


def _assert_equal(a: Any, b: Any) -> None:
    assert a == b, f"{a!r} != {b!r}"


def _assert_chips(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    labelled = sum(manifest["class_pixel_counts"][1:])
    assert manifest["chips"] and labelled > 0, manifest.get("class_pixel_counts")


def _mount_read_only(folder: Path) -> None:
    """Mount a read-only tmpfs on ``folder`` (the tests run as root: permissions do not bind
    root, a read-only mount does); skip where mounting is not allowed."""
    cmd = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    _MOUNTS.append(folder)


_MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount() -> Any:
    yield
    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())], check=False)


CASES: dict[str, Callable[[Env], Call]] = {
    name[2:]: fn for name, fn in dict(globals()).items() if name[:2] in ("c_", "s_")
}
ERRORS = [n for n in CASES if f"c_{n}" in globals()]


def test_the_corpus_is_large_enough():
    assert len(ERRORS) >= 30, len(ERRORS)


# ----------------------------------------------------------------------------- the tests


def _check_message(text: str, call: Call) -> None:
    import re

    for word in (*call.names, *call.fix):
        assert re.search(word, text, re.IGNORECASE), f"{word!r} not in: {text}"


def _check_after(call: Call, root: Path) -> None:
    for out in call.outputs if call.error else []:
        assert not out.exists(), f"{out} was left behind"
    for path in call.leftovers:
        assert not path.exists(), f"{path} exists: a pickle was executed"
    temps = [p for p in root.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock")]
    assert not temps, temps
    if call.check:
        call.check()


@pytest.mark.parametrize("name", list(CASES))
def test_api(name, model_dir, tmp_path, one_thread):
    call = CASES[name](Env(tmp_path, model_dir))
    if call.error is None:
        call.api()
    else:
        with pytest.raises(E.GeounetError) as info:
            call.api()
        assert type(info.value) is call.error, repr(info.value)
        _check_message(str(info.value), call)
        assert "\n" not in str(info.value).strip(), str(info.value)
    _check_after(call, tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_cli(name, model_dir, tmp_path, one_thread):
    call = CASES[name](Env(tmp_path, model_dir))
    obj: dict[str, Any] = {}  # the group keeps the error that ended the command here
    result = CliRunner().invoke(cli, call.cli, obj=obj)
    if call.error is None:
        assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    else:
        assert result.exit_code == 2, result.output + result.stderr + repr(result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("geounet: error:"), lines[0]
        _check_message(lines[0], call)
        assert type(obj.get("error")) is call.error, repr(obj.get("error"))
    _check_after(call, tmp_path)
