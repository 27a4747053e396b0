"""Untrusted files: model metadata is validated before use, chip manifests cannot leave their
folder. (Pickles are refused unread: tests/test_model.py and the corpus of
tests/test_bad_inputs.py, each with a crafted pickle that would create a file.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from model_fakes import tiny_config
from rasterio.transform import from_origin

from geounet.core.errors import InputNotFoundError, InvalidParameterError, ModelFileError
from geounet.data.manifest import MANIFEST, load_manifest
from geounet.model.files import CONFIG_FILE, build_network, read_config, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(source_dtype=None, unet_kwargs={"base_channels": 4, "depth": 2})
    return save_model(tmp_path_factory.mktemp("m") / "model", build_network(config), config)


# Each entry: (field, bad value) -> the message must name the field.
BAD_FIELDS = [
    ("in_channels", "3"),
    ("in_channels", 3.0),
    ("in_channels", True),
    ("in_channels", -1),
    ("arch", 7),
    ("backbone", ["resnet34"]),
    ("classes", []),
    ("classes", [{"value": 0, "name": "background"}]),
    ("classes", ["background", "building"]),
    ("bands", [1, 2]),
    ("bands", [0, 1, 2]),
    ("bands", "1,2,3"),
    ("band_names", "rgb"),
    ("stats", [1, 2, 3]),
    ("stats", {"mean": [1.0, 2.0], "std": [1.0, 1.0, 1.0]}),
    ("stats", {"mean": [1.0, 2.0, 3.0], "std": [1.0, 0.0, 1.0]}),
    ("stats", {"mean": [1.0, "2", 3.0], "std": [1.0, 1.0, 1.0]}),
    ("stats", {"std": [1.0, 1.0, 1.0]}),
    ("chip_size", 0),
    ("chip_size", "256"),
    ("gsd_m", -0.5),
    ("gsd_m", "0.3"),
    ("unet_kwargs", [4]),
]


@pytest.mark.parametrize(("key", "value"), BAD_FIELDS, ids=lambda v: repr(v)[:30])
def test_metadata_of_wrong_type_or_range_is_refused_before_use(model_folder, tmp_path, key, value):
    folder = tmp_path / "m"
    folder.mkdir()
    for f in model_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta[key] = value
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError) as err:
        read_config(folder)
    msg = str(err.value)
    assert CONFIG_FILE in msg and key in msg and "UnetClassifier.save" in msg, msg


def test_sound_metadata_still_reads(model_folder):
    config = read_config(model_folder)
    assert config.in_channels == 3 and config.n_classes == 2


def test_nan_in_json_stats_is_refused(model_folder, tmp_path):
    """JSON has no NaN, but Python's json module reads the token; it must not reach
    normalisation."""
    folder = tmp_path / "m"
    folder.mkdir()
    for f in model_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    text = (folder / CONFIG_FILE).read_text()
    meta = json.loads(text)
    meta["stats"]["mean"][1] = float("nan")
    (folder / CONFIG_FILE).write_text(json.dumps(meta))  # writes the NaN token
    with pytest.raises(ModelFileError, match="finite"):
        read_config(folder)


# ----------------------------------------------------------------------------- manifests


@pytest.fixture
def chips(tmp_path: Path) -> Path:
    """A chip folder written by prepare_data, and a file outside it."""
    from geounet.data.prepare import prepare_data

    profile = {
        "driver": "GTiff",
        "width": 64,
        "height": 64,
        "dtype": "uint8",
        "crs": "EPSG:32616",
        "transform": from_origin(500000, 3700000, 0.5, 0.5),
    }
    rng = np.random.default_rng(0)
    with rasterio.open(tmp_path / "img.tif", "w", count=3, **profile) as dst:
        dst.write(rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    lab = np.zeros((1, 64, 64), np.uint8)
    lab[:, 10:40, 10:40] = 1
    with rasterio.open(tmp_path / "lab.tif", "w", count=1, **profile) as dst:
        dst.write(lab)
    out = tmp_path / "chips"
    prepare_data(
        tmp_path / "img.tif", tmp_path / "lab.tif", classes=["building"], chip_size=32, out_dir=out
    )
    (tmp_path / "secret.tif").write_bytes((tmp_path / "img.tif").read_bytes())
    return out


def _set_first(chips: Path, key: str, value: str) -> None:
    manifest = json.loads((chips / MANIFEST).read_text())
    manifest["chips"][0][key] = value
    (chips / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "path",
    ["../secret.tif", "images/../../secret.tif", "{abs}", "./../chips/../secret.tif"],
)
@pytest.mark.parametrize("key", ["image", "label"])
def test_manifest_paths_cannot_leave_the_chip_folder(chips, key, path):
    value = path.replace("{abs}", str(chips.parent / "secret.tif"))
    _set_first(chips, key, value)
    with pytest.raises(InvalidParameterError, match="outside the chip folder") as err:
        load_manifest(chips)
    assert MANIFEST in str(err.value) and "prepare_data" in str(err.value)


def test_a_symlink_out_of_the_chip_folder_is_refused(chips):
    link = chips / "images" / "link.tif"
    os.symlink(chips.parent / "secret.tif", link)
    _set_first(chips, "image", "images/link.tif")
    with pytest.raises(InvalidParameterError, match="outside the chip folder"):
        load_manifest(chips)


def test_paths_that_stay_inside_are_accepted_and_missing_ones_named(chips):
    manifest = json.loads((chips / MANIFEST).read_text())
    first = manifest["chips"][0]["image"]
    _set_first(chips, "image", f"labels/../{first}")  # a detour that stays inside
    assert load_manifest(chips)["chips"][0]["image"] == f"labels/../{first}"
    _set_first(chips, "label", "labels/absent.tif")
    with pytest.raises(InputNotFoundError, match=r"labels/absent\.tif"):
        load_manifest(chips)


@pytest.mark.parametrize("record", [None, {"image": 3, "label": "x"}, {"label": "x"}])
def test_malformed_chip_records_are_refused(chips, record):
    manifest = json.loads((chips / MANIFEST).read_text())
    manifest["chips"][0] = record
    (chips / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InvalidParameterError, match="chip record"):
        load_manifest(chips)
