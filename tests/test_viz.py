"""Pictures: RGB bands picked by name (1-based), and quicklooks that leave pyplot alone."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from geounet.core.classes import make_classes
from geounet.core.errors import InvalidParameterError
from geounet.viz.bands import rgb_bands
from geounet.viz.batches import stretch as chip_stretch
from geounet.viz.plots import image_to_rgb, results_figure
from geounet.viz.quicklook import save_quicklook

BGRN = ["blue", "green", "red", "nir"]


def test_rgb_bands_are_1_based_and_picked_by_name():
    assert rgb_bands(BGRN) == (3, 2, 1)
    assert rgb_bands(["NIR", "Red", "Green", "Blue"]) == (2, 3, 4)  # any case
    assert rgb_bands(["b1", "b2", "b3", "b4"]) == (1, 2, 3)
    assert rgb_bands(["red", "nir"]) == (1, 1, 1)  # fewer than three bands: grey
    assert rgb_bands([None, None, None]) == (1, 2, 3)  # unnamed bands (rasterio descriptions)
    with pytest.raises(InvalidParameterError, match="without bands"):
        rgb_bands([])


def _distinct_chip(h: int = 8, w: int = 8) -> np.ndarray:
    """A normalised 4-band chip: band b holds the ramp ``b * ramp``, so bands differ."""
    ramp = np.linspace(-1.0, 1.0, h * w, dtype=np.float32).reshape(h, w)
    return np.stack([ramp * (b + 1) for b in range(4)])


def _stretched(band: np.ndarray) -> np.ndarray:
    """Reference 2-98 % stretch of one band with its own percentiles."""
    lo, hi = np.percentile(band, [2, 98])
    return np.clip((band - lo) / (hi - lo), 0, 1)


def test_image_to_rgb_draws_the_band_named_red_as_red():
    chip = _distinct_chip()
    rgb = image_to_rgb(chip, stats={"mean": [0] * 4, "std": [1] * 4}, band_names=BGRN)
    x = chip[[2, 1, 0]]  # red = band 3, green = band 2, blue = band 1
    lo, hi = np.percentile(x, [2, 98])
    expected = np.clip((x - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
    np.testing.assert_allclose(rgb, expected, atol=1e-6)


def test_results_figure_shows_a_bgr_nir_chip_in_true_colour():
    """Defect 8: show_results drew bands 1-3 as RGB, swapping red and blue of the sample."""
    chip = _distinct_chip()
    stats = {
        "mean": [0.0] * 4,
        "std": [1.0] * 4,
        "p2": [float(np.percentile(b, 2)) for b in chip],
        "p98": [float(np.percentile(b, 98)) for b in chip],
    }
    mask = np.zeros((8, 8), np.uint8)
    fig = results_figure([chip], [mask], [mask], make_classes(["building"]), stats, BGRN)
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    for channel, band in enumerate((3, 2, 1)):  # 1-based band numbers
        np.testing.assert_allclose(drawn[..., channel], _stretched(chip[band - 1]), atol=1e-5)


def test_show_batch_stretch_takes_1_based_band_numbers():
    chip = np.stack([np.full((4, 4), v, np.float64) for v in (10.0, 20.0, 30.0, 40.0)])
    stats = {"p2": [0.0, 0.0, 0.0, 0.0], "p98": [100.0, 100.0, 100.0, 100.0]}
    out = chip_stretch(chip, rgb_bands(BGRN), stats)
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == pytest.approx([0.3, 0.2, 0.1])  # red = band 3 (30)


@pytest.fixture
def quicklook_inputs(make_raster):
    rng = np.random.default_rng(0)
    image = make_raster(
        rng.integers(1, 255, (4, 32, 32)).astype(np.uint8), "img.tif", descriptions=BGRN
    )
    classes = np.zeros((32, 32), np.uint8)
    classes[8:20, 8:20] = 1
    return image, make_raster(classes, "cls.tif"), make_classes(["building"])


def test_save_quicklook_leaves_the_backend_and_open_figures_alone(quicklook_inputs, tmp_path):
    """Defect 9: matplotlib.use("Agg") switched the process-wide backend and closed figures."""
    image, classified, classes = quicklook_inputs
    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # stands in for a notebook's inline backend
    try:
        user_fig = plt.figure()
        out = save_quicklook(image, classified, tmp_path / "q.png", classes, max_size=64)
        assert matplotlib.get_backend() == "svg"
        assert plt.fignum_exists(user_fig.number)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close("all")
        plt.switch_backend(before)


def test_quicklook_draws_the_band_named_red_as_red(quicklook_inputs, tmp_path, make_raster):
    """Band 3 (red) a bright ramp, bands 1, 2, 4 dark: the first panel is red, not blue."""
    from PIL import Image

    arr = np.zeros((4, 32, 32), np.uint8)
    arr[2] = np.linspace(0, 255, 32).astype(np.uint8)[None, :]  # red rises to the right
    image = make_raster(arr, "red.tif", descriptions=BGRN)
    _, classified, classes = quicklook_inputs
    png = save_quicklook(image, classified, tmp_path / "red.png", classes, max_size=32)
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    reddish = (pixels[:, 0] > 200) & (pixels[:, 2] < 60)
    bluish = (pixels[:, 2] > 200) & (pixels[:, 0] < 60)
    assert reddish.sum() > 1000 and bluish.sum() == 0


def test_show_results_of_a_classifier_draws_its_band_named_red_as_red():
    """UnetClassifier.show_results passes the model's band names to the picture."""
    from model_fakes import make_fake_data, synthetic_scene

    from geounet.app.classifier import UnetClassifier

    image, labels = synthetic_scene(64, bands=4)
    image[0] //= 4  # blue dark, red (band 3) as it is: the two differ everywhere
    data = make_fake_data(chip=32, image=image, labels=labels, batch_size=2)
    data.band_names = BGRN
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    fig = model.show_results(rows=1)
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    chip = next(iter(data.valid_dl))[0][0].numpy()
    expected = image_to_rgb(chip, data.stats, BGRN)
    np.testing.assert_allclose(drawn, expected, atol=1e-6)
    assert not np.allclose(drawn, image_to_rgb(chip, data.stats, ["a", "b", "c", "d"]))


def test_geodata_is_what_the_pictures_read(make_raster):
    """viz reads chipped data through the ChipData protocol and never imports geounet.data."""
    from geounet.data.prepare import prepare_data
    from geounet.viz.batches import ChipData, summary_frame

    rng = np.random.default_rng(0)
    image = make_raster(rng.integers(0, 255, (3, 96, 96)).astype(np.uint8))
    labels = make_raster((rng.random((96, 96)) > 0.7).astype(np.uint8), name="labels.tif")
    data = prepare_data(image, labels, classes={1: "building"}, chip_size=32)
    assert isinstance(data, ChipData)
    assert not isinstance(object(), ChipData)
    assert summary_frame(data).loc["chips", "total"] == len(data.train_ds) + len(data.valid_ds)
