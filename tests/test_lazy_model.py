"""A model folder is read lazily: its network is built only when something needs it (issue 13).

``UnetClassifier.from_model`` reads and checks ``geounet.json`` and finds the weights file; the
PyTorch network is built on first use. A classification by an engine cached for those weights
(ONNX Runtime, OpenVINO) never builds it, so its memory (segmentation-models-pytorch and a
second copy of the weights) is never paid; the cache key is the same whether it is hashed from
the file or from the loaded network.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from model_fakes import make_fake_data

from geounet.app import classifier as classifier_module
from geounet.app.classifier import UnetClassifier
from geounet.core.errors import ModelFileError
from geounet.inference.engine_choice import ENGINE_TAG, weights_digest
from geounet.model.digest import file_digest
from geounet.model.files import CONFIG_FILE, WEIGHTS_FILE

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
TILING = {"tile_size": 64, "overlap": 16, "progress": False}


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A saved tiny model; the user engine cache inside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    model = UnetClassifier(make_fake_data(), backbone=None, base_channels=4, depth=2, seed=0)
    return model.save(tmp_path / "model")


def _scene(make_raster) -> Path:
    rng = np.random.default_rng(1)
    return make_raster(rng.integers(0, 256, size=(3, 96, 96)).astype(np.uint8))


def test_from_model_reads_the_weights_on_first_use_and_hashes_alike(folder):
    loaded = UnetClassifier.from_model(folder, device="cpu")
    assert loaded.unloaded_weights == folder / WEIGHTS_FILE
    from_file = file_digest(loaded.unloaded_weights)
    network = loaded.network  # built now, once
    assert loaded.unloaded_weights is None and loaded.network is network
    conv = next(p for p in network.parameters() if p.dim() == 4)
    assert not network.training and conv.is_contiguous(memory_format=torch.channels_last)
    assert weights_digest(network) == from_file
    eager = UnetClassifier.from_model(folder, device="cpu").network
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(network(x), eager(x))


def test_weights_that_do_not_fit_fail_on_first_use_naming_the_file(folder):
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta["unet_kwargs"] = {**meta.get("unet_kwargs", {}), "base_channels": 8}
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    loaded = UnetClassifier.from_model(folder, device="cpu")  # the description is fine
    with pytest.raises(ModelFileError, match=f"{WEIGHTS_FILE}.*do not fit"):
        loaded.network  # noqa: B018


def test_a_missing_weights_file_fails_at_once(folder):
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        UnetClassifier.from_model(folder)


def test_torch_classification_builds_the_network(folder, make_raster, tmp_path):
    loaded = UnetClassifier.from_model(folder, device="cpu")
    loaded.classify(_scene(make_raster), tmp_path / "a.tif", engine="torch", **TILING)
    assert loaded.unloaded_weights is None


@pytest.mark.skipif(not HAS_ORT, reason='needs pip install "geounet[onnx]"')
def test_a_cached_onnx_engine_classifies_without_building_the_network(
    folder, make_raster, tmp_path, monkeypatch
):
    image = _scene(make_raster)
    first = UnetClassifier.from_model(folder, device="cpu")  # exports (builds the network)
    first.classify(image, tmp_path / "a.tif", engine="onnx", **TILING)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was built")

    monkeypatch.setattr(classifier_module, "load_for_inference", refuse)
    later = UnetClassifier.from_model(folder, device="cpu")
    later.classify(image, tmp_path / "b.tif", engine="onnx", **TILING)
    assert later.unloaded_weights == folder / WEIGHTS_FILE
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert b.tags()[ENGINE_TAG] == "onnx-fp32"
        np.testing.assert_array_equal(a.read(1), b.read(1))


# ----------------------------------------------------------------------------- without torch


def test_saved_model_opens_without_torch_and_builds_its_network_on_first_use(folder):
    from geounet.model.saved import SavedModel

    saved = SavedModel.open(folder, device="cpu")
    assert saved.device_type == "cpu" and saved.unloaded_weights == folder / WEIGHTS_FILE
    assert saved.model_dir == folder and saved.config.n_classes == 2
    network = saved.network
    assert saved.unloaded_weights is None and not network.training
    reference = UnetClassifier.from_model(folder, device="cpu").network
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(network(x), reference(x))


def test_gpu_possible_follows_the_visible_devices(monkeypatch):
    from geounet.model import saved

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not saved.gpu_possible()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(saved.sys, "platform", "linux")
    monkeypatch.setattr(saved.Path, "exists", lambda self: str(self) == "/dev/kfd")
    assert saved.gpu_possible()  # a ROCm driver
    monkeypatch.setattr(saved.Path, "exists", lambda self: False)
    assert not saved.gpu_possible()


def test_file_digest_without_torch_equals_the_network_digest(folder, tmp_path):
    from safetensors.torch import save_file

    from geounet.model import digest

    weights = folder / WEIGHTS_FILE
    network = UnetClassifier.from_model(folder, device="cpu").network
    assert digest._file_digest(str(weights), 0, 0) == weights_digest(network)
    half = tmp_path / "bf16.safetensors"  # numpy has no bfloat16: hashed through torch
    tensors = {"w": torch.ones(3, dtype=torch.bfloat16), "b": torch.zeros(2)}
    save_file(tensors, str(half))
    assert file_digest(half) == digest.state_digest(tensors.items())


@pytest.mark.skipif(not HAS_ORT, reason='needs pip install "geounet[onnx]"')
def test_geounet_classify_with_a_cached_engine_never_imports_torch(folder, make_raster, tmp_path):
    """Nor geopandas and scipy, which only vectorizing needs."""
    import subprocess
    import sys

    from geounet.app.workflows import classify_scene
    from geounet.inference.options import ClassifyOptions

    scene = _scene(make_raster)
    options = ClassifyOptions(engine="onnx", overwrite=True, **TILING)
    first = classify_scene(scene, model=folder, out=tmp_path / "a.tif", options=options)
    code = (
        "import sys\n"
        "from geounet.cli.main import cli\n"
        f"args = ['classify', {str(scene)!r}, '--model', {str(folder)!r}, '--out',"
        f" {str(tmp_path / 'b.tif')!r}, '--engine', 'onnx', '--tile-size', '64',"
        " '--overlap', '16']\n"
        "try:\n"
        "    cli.main(args, standalone_mode=False)\n"
        "finally:\n"
        "    heavy = ('torch', 'segmentation_models_pytorch', 'geopandas', 'scipy')\n"
        "    print(*(m in sys.modules for m in heavy))\n"
    )
    env = {**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "False False False False"
    with rasterio.open(first["classified"]) as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert b.tags()[ENGINE_TAG] == "onnx-fp32"
