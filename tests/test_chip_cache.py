"""Decoded chips kept in memory (issue 13): later epochs read no file, and train on the same data.

The cache changes where the bytes come from, never what the loader gives: batches with and
without it are equal, augmentation included.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from geounet import prepare_data
from geounet.data import geodata
from geounet.data.geodata import ChipDataset, GeoData


@pytest.fixture()
def chip_folder(make_raster, tmp_path):
    """A chip folder of a 128 x 128 3-band scene with square labels (chips of 32)."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (3, 128, 128)).astype(np.uint8)
    labels = np.zeros((128, 128), np.uint8)
    labels[16:48, 16:48] = labels[72:120, 64:100] = 1
    img, lab = make_raster(image, name="img.tif"), make_raster(labels, name="lab.tif")
    data = prepare_data(img, lab, classes={1: "b"}, chip_size=32, out_dir=tmp_path / "chips")
    return data.chip_dir


@pytest.fixture()
def opened(monkeypatch):
    """Counts the files the datasets open."""
    count = [0]
    real = geodata.rasterio.open

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(geodata.rasterio, "open", counting)
    return count


def _batches(data: GeoData) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.train_dl)


def test_later_epochs_read_no_chip_file(chip_folder, opened):
    data = GeoData.from_folder(chip_folder, batch_size=4)
    _batches(data)
    first = opened[0]
    assert first == 2 * len(data.train_ds)  # an image and a label file per chip
    _batches(data)
    assert opened[0] == first


def test_cached_and_uncached_loaders_give_the_same_augmented_batches(chip_folder, monkeypatch):
    runs = []
    for budget in (geodata.CHIP_CACHE_MB, 0):
        monkeypatch.setattr(geodata, "CHIP_CACHE_MB", budget)
        data = GeoData.from_folder(chip_folder, batch_size=4, augment=True, seed=3)
        assert data.train_ds.cache_mb == budget
        runs.append(_batches(data) + _batches(data))  # two epochs: from files, then memory
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_the_budget_bounds_the_cache(chip_folder, opened):
    data = GeoData.from_folder(chip_folder)
    records, stats = data.train_ds.chips, data.stats
    one_chip = sum(a.nbytes for a in data.train_ds._read_files(0))
    ds = ChipDataset(chip_folder, records, stats, cache_mb=2.5 * one_chip / 2**20)
    opened[0] = 0
    for _ in range(2):
        for i in range(len(ds)):
            ds[i]
    assert opened[0] == 2 * (2 * len(ds) - 2)  # two chips kept, the others read twice


def test_cached_chips_are_read_only_and_not_pickled(chip_folder):
    data = GeoData.from_folder(chip_folder)
    ds = data.train_ds
    image, valid, label = ds.read_valid(0)
    assert not (image.flags.writeable or valid.flags.writeable or label.flags.writeable)
    ds[0]  # an item is made from a read-only chip without touching it
    copy = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker process gets
    assert copy._cache == {} and len(ds._cache) == 1
    np.testing.assert_array_equal(copy.read_valid(0)[0], image)
