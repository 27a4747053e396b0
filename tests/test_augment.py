"""Augmentation for aerial chips: labels stay aligned, nodata stays nodata, any data type."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geounet.core.errors import InvalidParameterError
from geounet.data.augment import (
    CUTMIX_SIDE,
    AugmentOptions,
    augment_chip,
    augment_from_text,
    augment_options,
    cut_mix,
    rotate_and_zoom,
)
from geounet.data.normalize import normalize_valid

GEOMETRY_ONLY = AugmentOptions(p_photometric=0.0)


def blocks(size: int = 64) -> torch.Tensor:
    """A class mask with large blocks of classes 1 and 2 (no symmetry)."""
    m = torch.zeros(size, size, dtype=torch.int64)
    m[4:30, 8:50] = 1
    m[36:60, 20:34] = 2
    return m


def test_geometry_keeps_image_and_labels_aligned():
    mask = blocks()
    image = torch.stack([mask.float() * 10, mask.float() * -5, torch.ones(64, 64)])
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        x, y = augment_chip(image, mask, None, g, GEOMETRY_ONLY)
        known = y != 255
        # the image band that encodes the class agrees with the mask away from block edges
        agree = (torch.round(x[0] / 10) == y)[known].float().mean()
        assert agree > 0.97, seed
        # constant band: 1 wherever the zoom left data, 0 (nodata) on an uncovered border
        assert torch.equal(x[2] != 0, known)


def test_dihedral_alone_is_exact():
    mask = blocks()
    image = mask.float()[None]
    opts = AugmentOptions(scale=(1.0, 1.0), p_photometric=0.0)
    views = set()
    for seed in range(40):
        x, y = augment_chip(image, mask, None, torch.Generator().manual_seed(seed), opts)
        assert torch.equal(x[0].long(), y)
        views.add(y.numpy().tobytes())
    assert len(views) == 8


def test_nodata_stays_nodata_under_every_transform():
    mask = blocks()
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[:, :16] = False  # a nodata stripe (e.g. the edge of a scene)
    image = torch.where(valid, 1.0 + mask.float(), torch.zeros(())).expand(3, 64, 64).clone()
    label = torch.where(valid, mask, torch.full((), 255))
    for seed in range(30):
        x, y = augment_chip(image, label, valid, torch.Generator().manual_seed(seed))
        nodata = y == 255
        assert (x[:, nodata] == 0).all()  # nodata is the mean (0) in every band
        assert (x[0][~nodata] != 0).all()  # valid pixels stay data after photometric changes
        # a quarter of the chip is nodata, plus the border a zoom-out (>= 0.85) uncovers
        assert 0.15 < nodata.float().mean() < 0.25 + (1 - 0.85**2)


def test_photometric_changes_each_band_within_bounds():
    torch.manual_seed(0)
    image = torch.randn(4, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.int64)
    opts = AugmentOptions(dihedral=False, scale=(1.0, 1.0), p_photometric=1.0)
    x, _ = augment_chip(image, mask, None, torch.Generator().manual_seed(3), opts)
    shift = (x.mean((1, 2)) - image.mean((1, 2))).abs()
    ratio = x.std((1, 2)) / image.std((1, 2))
    assert not torch.allclose(x, image)
    # brightness shifts the mean, contrast scales the spread; gamma (on the band's range of
    # about 6 standard deviations here) moves both by up to about 0.6 / 20 % more
    assert (shift < opts.brightness + 0.6).all()
    assert ((ratio > 1 - opts.contrast - 0.2) & (ratio < 1 + opts.contrast + 0.2)).all()
    # monotone per band: the order of the pixel values is kept
    for b in range(4):
        order = torch.argsort(image[b].flatten())
        assert (torch.diff(x[b].flatten()[order]) >= -1e-5).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_8_bit_16_bit_and_float_imagery_alike(dtype):
    rng = np.random.default_rng(0)
    raw8 = rng.integers(0, 256, (3, 32, 32)).astype(np.uint8)
    other = raw8.astype(dtype) * 257 if dtype == np.uint16 else raw8.astype(dtype) / 255
    k = 257.0 if dtype == np.uint16 else 1 / 255
    valid = np.ones((32, 32), bool)
    stats8 = {"mean": [120.0] * 3, "std": [60.0] * 3}
    stats = {"mean": [120.0 * k] * 3, "std": [60.0 * k] * 3}
    mask = torch.zeros(32, 32, dtype=torch.int64)
    a, _ = augment_chip(
        torch.from_numpy(normalize_valid(raw8, stats8, valid)),
        mask,
        None,
        torch.Generator().manual_seed(1),
    )
    b, _ = augment_chip(
        torch.from_numpy(normalize_valid(other, stats, valid)),
        mask,
        None,
        torch.Generator().manual_seed(1),
    )
    assert torch.allclose(a, b, atol=1e-4)


def test_bad_options_name_the_field():
    with pytest.raises(InvalidParameterError, match="scale"):
        AugmentOptions(scale=(1.2, 1.5))
    with pytest.raises(InvalidParameterError, match="gamma"):
        AugmentOptions(gamma=2.0)
    with pytest.raises(InvalidParameterError, match=r"rotate=200.*\[0, 180\] degrees"):
        AugmentOptions(rotate=200)


def test_photometric_on_a_fully_valid_chip_equals_the_masked_path(monkeypatch):
    """The dense fast path (no gather/scatter) gives bit-identical chips."""

    image = torch.randn(4, 48, 48)
    opts = AugmentOptions(dihedral=False, scale=(0.9, 1.1), p_photometric=1.0)
    mask = torch.zeros(48, 48, dtype=torch.int64)
    fast, _ = augment_chip(image, mask, None, torch.Generator().manual_seed(5), opts)
    real_all = torch.Tensor.all
    # make the chip look partly invalid to the dense test only: the masked path runs
    monkeypatch.setattr(torch.Tensor, "all", lambda t, *a, **k: torch.tensor(False))
    slow, _ = augment_chip(image, mask, None, torch.Generator().manual_seed(5), opts)
    monkeypatch.setattr(torch.Tensor, "all", real_all)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_normalize_valid_fast_paths_equal_the_formula(dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 200, (3, 16, 16)).astype(dtype)
    stats = {"mean": [90.0, 100.0, 110.0], "std": [30.0, 0.0, 20.0]}
    for valid in (np.ones((16, 16), bool), rng.random((16, 16)) > 0.3):
        expected = (x.astype(np.float32) - np.float32([[[90]], [[100]], [[110]]])) / np.float32(
            [[[30]], [[1e-6]], [[20]]]
        )
        expected[:, ~valid] = 0
        np.testing.assert_array_equal(normalize_valid(x, stats, valid), expected)
    bad = {"mean": [float("nan"), 100.0, 110.0], "std": [30.0, 1.0, 20.0]}
    assert (normalize_valid(x, bad, np.ones((16, 16), bool))[0] == 0).all()  # NaN -> 0


def test_grayscale_takes_the_colour_and_keeps_the_labels():
    image, mask = torch.randn(3, 32, 32), blocks(32)
    opts = AugmentOptions(dihedral=False, scale=(1.0, 1.0), p_photometric=0.0, grayscale=1.0)
    out, out_mask = augment_chip(image, mask, None, torch.Generator().manual_seed(0), opts)
    assert torch.allclose(out, image.mean(0, keepdim=True).expand_as(image))
    assert torch.equal(out_mask, mask)
    one_band = torch.randn(1, 32, 32)  # nothing to take from a single band
    same, _ = augment_chip(one_band, mask, None, torch.Generator().manual_seed(0), opts)
    assert torch.equal(same, one_band)


def test_grayscale_off_draws_nothing_more():
    """At 0 no number is drawn for it, so seeded runs stay as they were; above 0, one."""
    image, mask = torch.randn(3, 32, 32), blocks(32)
    off, on = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    augment_chip(image, mask, None, off, AugmentOptions(p_photometric=1.0, grayscale=0.0))
    augment_chip(image, mask, None, on, AugmentOptions(p_photometric=1.0, grayscale=1e-9))
    assert not torch.equal(off.get_state(), on.get_state())  # the draw is conditional
    torch.rand(1, generator=off)  # the one number grayscale > 0 draws
    assert torch.equal(off.get_state(), on.get_state())


def test_recolor_shifts_each_labelled_class_on_its_own_and_keeps_nodata():
    from geounet.data.augment import RECOLOR_SIGMA

    image, mask = torch.randn(3, 64, 64), blocks(64)
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[:, :10] = False  # nodata stays nodata
    opts = AugmentOptions(dihedral=False, scale=(1.0, 1.0), p_photometric=0.0, recolor=1.0)
    out, out_mask = augment_chip(image, mask, valid, torch.Generator().manual_seed(0), opts)
    assert torch.equal(out_mask[valid], mask[valid])
    assert (out[:, ~valid] == 0).all() and (out_mask[~valid] == 255).all()
    shift = out - image
    ground = (mask == 0) & valid
    assert torch.equal(out[:, ground], image[:, ground])  # the background keeps its colour
    shifts = []
    for k in torch.unique(mask[valid]).tolist():
        if k == 0:
            continue
        d = shift[:, (mask == k) & valid]  # one shift per band over the whole class
        assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-5)
        assert (d[:, 0].abs() <= RECOLOR_SIGMA + 1e-6).all()
        shifts.append(d[:, 0])
    assert len(shifts) >= 2 and not torch.allclose(shifts[0], shifts[1])  # drawn per class


def test_recolor_off_draws_nothing_more():
    image, mask = torch.randn(3, 32, 32), blocks(32)
    off, on = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    augment_chip(image, mask, None, off, AugmentOptions(p_photometric=0.0))
    augment_chip(image, mask, None, on, AugmentOptions(p_photometric=0.0, recolor=1e-9))
    torch.rand(1, generator=off)  # the one number recolor > 0 draws (no chip recoloured)
    assert torch.equal(off.get_state(), on.get_state())
    with pytest.raises(InvalidParameterError, match="recolor"):
        AugmentOptions(recolor=1.5)


def test_augment_options_from_a_flag_a_mapping_or_options():
    assert augment_options(True) == AugmentOptions()
    assert augment_options(False) is None and augment_options(None) is None
    got = augment_options({"grayscale": 0.25, "scale": [0.9, 1.1]})
    assert got == AugmentOptions(grayscale=0.25, scale=(0.9, 1.1))
    assert augment_options(got) is got
    with pytest.raises(InvalidParameterError, match=r"\['colour'\].*'grayscale'"):
        augment_options({"colour": 0.2})
    with pytest.raises(InvalidParameterError, match=r"augment='strong'.*mapping"):
        augment_options("strong")
    with pytest.raises(InvalidParameterError, match="grayscale"):
        augment_options({"grayscale": 2.0})
    with pytest.raises(InvalidParameterError, match=r"scale is a \(low, high\) pair"):
        augment_options({"scale": 1.1})
    with pytest.raises(InvalidParameterError, match="numbers in"):
        augment_options({"brightness": "high"})


def test_cut_mix_pastes_one_aligned_box_and_keeps_nodata() -> None:
    """The box's image and mask come from the other chip together; its nodata stays nodata."""
    n = 64
    image, mask = torch.zeros(3, n, n), torch.zeros(n, n, dtype=torch.int64)
    other = torch.full((3, n, n), 2.0)
    other_mask = torch.ones(n, n, dtype=torch.int64)
    other[:, :, :8], other_mask[:, :8] = 0.0, 255  # a nodata stripe on the other chip
    lo, hi = CUTMIX_SIDE
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        x, y = cut_mix(image, mask, other, other_mask, gen)
        pasted = y != 0
        rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
        assert lo * n - 1 <= len(rows) <= hi * n + 1  # one box of the drawn side
        assert (x[0][y == 1] == 2.0).all() and (x[:, y == 0] == 0).all()
        assert (x[:, y == 255] == 0).all()  # the other chip's nodata came along
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        assert pasted[box].all()  # one rectangle (the pasted nodata is not 0 either)
    assert not mask.any() and not image.any()  # the inputs are not changed
    with pytest.raises(ValueError, match="one shape"):
        cut_mix(image, mask, other[:, :32], other_mask[:32])


def test_cutmix_option_mixes_training_chips_and_is_off_by_default(make_raster, tmp_path) -> None:
    """``augment={'cutmix': 1.0}``: every training chip shows part of another; off by default."""
    from geounet.data.prepare import prepare_data

    mask = np.zeros((64, 128), np.uint8)
    mask[:, 64:] = 1  # the left chip all background, the right one all building
    img = make_raster(np.stack([mask * 200 + 10] * 3).astype(np.uint8))
    kw = {"classes": ["b"], "chip_size": 64, "stride": 64, "val_fraction": 0}
    labels = make_raster(mask, "l.tif")
    plain = {"dihedral": False, "scale": (1.0, 1.0), "p_photometric": 0.0}
    data = prepare_data(
        img, labels, augment={**plain, "cutmix": 1.0}, out_dir=tmp_path / "on", **kw
    )
    assert len(data.train_ds) == 2
    for i in range(2):
        for _ in range(10):
            x, y = data.train_ds[i]
            assert 0 < int((y == 1).sum()) < 64 * 64  # both chips in one
            assert ((x[0] > 0) == (y == 1)).all()  # image and mask mixed together
    off = prepare_data(img, labels, augment=plain, out_dir=tmp_path / "off", **kw)
    assert {int(off.train_ds[i][1].sum()) for i in range(2)} == {0, 64 * 64}
    with pytest.raises(InvalidParameterError, match="cutmix"):
        AugmentOptions(cutmix=1.5)


def test_a_quarter_turn_by_rotate_and_zoom_is_exact_on_any_chip_shape() -> None:
    """90 degrees lands on pixel centres: the mask turns exactly, also on a wide chip."""
    square = blocks(32)
    ones = torch.ones(32, 32, dtype=torch.bool)
    _, turned, ok = rotate_and_zoom(square[None].float(), square, ones, 90.0)
    assert ok.all()
    assert torch.equal(turned, torch.rot90(square, 1)) or torch.equal(
        turned, torch.rot90(square, -1)
    )
    wide = torch.zeros(16, 32, dtype=torch.int64)
    wide[2:9, 10:14] = 1  # inside the middle 16 x 16, which a quarter turn keeps in view
    image, mask, ok = rotate_and_zoom(wide[None].float(), wide, torch.ones(16, 32, dtype=bool), 90)
    middle = wide[:, 8:24]
    assert torch.equal(mask[:, 8:24], torch.rot90(middle, 1)) or torch.equal(
        mask[:, 8:24], torch.rot90(middle, -1)
    )
    assert ok[:, 8:24].all() and not ok[:, :8].any() and not ok[:, 24:].any()
    assert torch.equal(image[0].round().long()[ok], mask[ok])


def test_rotate_and_zoom_out_leaves_nodata_around_the_view() -> None:
    mask = blocks(64)
    _, _, ok = rotate_and_zoom(mask[None].float(), mask, torch.ones(64, 64, dtype=bool), 0, 0.5)
    assert abs(float(ok.float().mean()) - 0.25) < 0.02  # half the side: a quarter of the area


def test_rotation_keeps_labels_aligned_and_uncovered_corners_nodata() -> None:
    mask = blocks()
    image = torch.stack([mask.float() * 10, torch.ones(64, 64)])
    opts = AugmentOptions(rotate=45.0, p_photometric=0.0, dihedral=False)
    turned = 0
    for seed in range(20):
        x, y = augment_chip(image, mask, None, torch.Generator().manual_seed(seed), opts)
        known = y != 255
        assert (torch.round(x[0] / 10) == y)[known].float().mean() > 0.97, seed
        assert torch.equal(x[1] != 0, known)  # the corners a turn uncovers are nodata
        turned += int((~known).float().mean() > 0.02 and not torch.equal(y, mask))
    assert turned >= 10  # most draws turn the chip far enough to uncover corners
    assert augment_options({"rotate": 30}).rotate == 30


def test_augment_from_text_reads_command_line_items() -> None:
    assert augment_from_text([]) is True
    assert augment_from_text(["OFF"]) is False
    got = augment_from_text(["rotate=45", "scale=0.9,1.1", "dihedral=false", "cutmix=0.5"])
    assert got == {"rotate": 45.0, "scale": (0.9, 1.1), "dihedral": False, "cutmix": 0.5}
    assert augment_options(got) == AugmentOptions(
        rotate=45.0, scale=(0.9, 1.1), dihedral=False, cutmix=0.5
    )
    bad = {
        "colour=0.2": r"KEY one of \['dihedral'",
        "rotate": "expected KEY=VALUE",
        "scale=1.1": r"scale takes two numbers LOW,HIGH",
        "dihedral=maybe": "true or false",
        "rotate=much": "rotate takes a number",
        "rotate=200": r"rotate=200.*\[0, 180\]",
    }
    for item, message in bad.items():
        with pytest.raises(InvalidParameterError, match=message):
            augment_from_text([item])
    with pytest.raises(InvalidParameterError, match=r"'off' .* no other item"):
        augment_from_text(["off", "rotate=45"])
