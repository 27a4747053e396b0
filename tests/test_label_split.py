"""Touching buildings are split by default unless the training labels draw blocks as one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import pointwise_building_model

from geounet.app.workflows import describe
from geounet.cli.main import cli
from geounet.inference.classify import classify_raster
from geounet.model.files import read_config
from geounet.vectorizing.instances import SeparationOptions, label_split_share
from geounet.vectorizing.pipeline import vectorize
from geounet.vectorizing.sizes import (
    LABEL_SPLIT_TAG,
    MAX_LABEL_SPLIT_SHARE,
    MIN_SPLIT_OBJECTS,
    separate_from_tag,
    split_shares_from_sizes,
)

PIXEL = (0.5, 0.5)


def dumbbell(a: np.ndarray, r: int, c: int) -> None:
    """Two 8 m squares (0.5 m pixels) joined by a 2 m bridge, drawn as one object at (r, c)."""
    a[r : r + 16, c : c + 16] = 1
    a[r : r + 16, c + 20 : c + 36] = 1
    a[r + 6 : r + 10, c + 16 : c + 20] = 1


def chip(blocks: int, houses: int) -> np.ndarray:
    """A 128-pixel label chip of ``blocks`` dumbbells and ``houses`` 8 m squares."""
    a = np.zeros((128, 128), np.uint8)
    spots = [(r, c) for r in (4, 34, 64, 94) for c in (4, 46, 88) if c + 36 < 128][:6]
    for k, (r, c) in enumerate(spots[: blocks + houses]):
        if k < blocks:
            dumbbell(a, r, c)
        else:
            a[r : r + 16, c : c + 16] = 1
    return a


def test_the_share_is_the_area_of_the_labelled_objects_the_split_cuts():
    assert label_split_share([chip(0, 6)], 1, PIXEL) == {"split_objects": 6, "split_share": 0.0}
    assert label_split_share([chip(6, 0)], 1, PIXEL) == {"split_objects": 6, "split_share": 1.0}
    mixed = label_split_share([chip(2, 4)], 1, PIXEL)
    assert type(mixed["split_share"]) is float  # a plain number in the model's JSON
    # two dumbbells of 528 pixels against four squares of 256, each weighted for how often
    # a chip sees it whole (the wider dumbbell less often: more weight)
    assert mixed["split_objects"] == 6
    assert 2 * 528 / (2 * 528 + 4 * 256) < mixed["split_share"] < 0.6
    # an object cut by the chip border is not measured: its shape is unknown
    edge = np.zeros((64, 64), np.uint8)
    dumbbell(edge, 0, 4)
    assert label_split_share([edge], 1, PIXEL) == {"split_objects": 0, "split_share": 0.0}
    # a wider minimum separation keeps the dumbbells whole (their squares are 8 m wide)
    # at most about `most` objects: whole chips until that many
    assert label_split_share([chip(3, 3)] * 4, 1, PIXEL, most=7)["split_objects"] == 12
    wide = SeparationOptions(min_separation_m=10.0)
    assert label_split_share([chip(6, 0)], 1, PIXEL, wide)["split_share"] == 0.0


def test_the_tag_decides_the_default_and_too_few_objects_say_nothing():
    sizes = {
        "building": {"count": 40, "split_objects": MIN_SPLIT_OBJECTS, "split_share": 0.2},
        "tree": {"count": 40, "split_objects": MIN_SPLIT_OBJECTS - 1, "split_share": 0.5},
        "water": {"count": 40},
    }
    assert split_shares_from_sizes(sizes) == {"building": 0.2}
    assert split_shares_from_sizes(None) == {} == split_shares_from_sizes({})
    blocks = json.dumps({"building": MAX_LABEL_SPLIT_SHARE})
    assert separate_from_tag(blocks, "building") == (False, MAX_LABEL_SPLIT_SHARE)
    assert separate_from_tag(json.dumps({"building": 0.05}), "building") == (True, 0.05)
    for tag in (None, "", "not json", "[0.5]", json.dumps({"house": 0.5}), '{"building": NaN}'):
        assert separate_from_tag(tag, "building") == (True, None), tag


def test_prepared_block_labels_record_a_high_share_in_the_model(tmp_path, labelled_model):
    labels = np.zeros((256, 256), np.uint8)
    for r in range(4, 240, 22):
        for c in range(4, 200, 42):
            dumbbell(labels, r, c)
    model = labelled_model(labels, 64)
    sizes = model.config.object_sizes["building"]
    assert sizes["split_objects"] >= MIN_SPLIT_OBJECTS
    assert sizes["split_share"] == 1.0
    folder = model.save(tmp_path / "m")
    assert read_config(folder).object_sizes["building"] == sizes
    rows = dict(describe(folder))  # `geounet info MODEL_DIR` says what vectorize will do
    assert rows["vectorize touching buildings"].startswith("kept whole (the split would cut 100")
    assert rows["vectorize min area"].startswith("building ")


def trained_on(split_share: float | None) -> dict:
    """The ``object_sizes`` of a model whose training labels had this split share (or none)."""
    sizes = {"count": 40, "p10_m2": 4.0}
    if split_share is not None:
        sizes.update(split_objects=40, split_share=split_share)
    return {"building": sizes}


@pytest.mark.parametrize(("share", "pieces"), [(None, 2), (0.02, 2), (0.3, 1)])
def test_vectorize_follows_the_labels_of_the_model(tmp_path, make_raster, share, pieces):
    img = np.zeros((1, 40, 60), np.uint8)
    dumbbell(img[0], 10, 10)
    img[img > 0] = 200
    out = classify_raster(
        pointwise_building_model(trained_on(share)), make_raster(img, "s.tif"), tmp_path / "c.tif",
        probabilities=False, progress=False,
    )  # fmt: skip
    with rasterio.open(out) as src:
        tag = src.tags().get(LABEL_SPLIT_TAG)
    assert tag is None if share is None else json.loads(tag) == {"building": share}
    b = vectorize(out)["building"]
    assert len(b) == pieces
    assert b.attrs["separate"] is (pieces == 2)
    assert b.attrs["label_split_share"] == share
    # what the user asks for wins
    assert len(vectorize(out, separate=True)["building"]) == 2
    assert len(vectorize(out, separate=False)["building"]) == 1
    base = ["vectorize", str(out), "--out", str(tmp_path / "a.gpkg"), "--overwrite"]
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 0, r.output
    assert f"building: {pieces} features" in r.output
    note = "touching buildings kept whole: the model's training labels draw blocks"
    assert (note in r.output) is (pieces == 1)
    if pieces == 1:
        assert "cut 30% of their building area" in r.output
    r = CliRunner().invoke(cli, [*base, "--separate"])
    assert "building: 2 features" in r.output and "kept whole" not in r.output
