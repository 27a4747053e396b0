"""Exports: ONNX for QGIS Deepness, .dlpk for ArcGIS Pro, TorchScript; checked against geounet."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from model_fakes import make_fake_data

from geounet.app import arcgis
from geounet.app.classifier import UnetClassifier
from geounet.app.export import EXPORT_FORMATS, export_model
from geounet.cli.main import cli
from geounet.core.errors import InvalidParameterError, OutputExistsError
from geounet.data.normalize import normalize
from geounet.inference.engine import run_network

TINY = {"backbone": None, "base_channels": 4, "depth": 2, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny 3-band, 3-class uint8 model whose weights are not all trivial."""
    data = make_fake_data(classes={1: "building", 2: "road"})
    model = UnetClassifier(data, **TINY)
    with torch.no_grad():  # perturb the weights so the classes are not all background
        for p in model.network.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.save(tmp_path_factory.mktemp("m") / "model")


def _geounet_probs(model: UnetClassifier, tiles_uint8: np.ndarray) -> np.ndarray:
    prepared = model.network.eval()
    x = normalize(tiles_uint8, model.config.stats)
    return run_network(type("M", (), {"network": prepared, "device": "cpu"})(), x)


def test_onnx_matches_geounet_and_carries_deepness_metadata(model_dir: Path, tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = export_model(model_dir, "onnx", tmp_path / "m.onnx", tile_size=64, overlap=16)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [3, 64, 64]  # square tiles, dynamic batch
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, size=(2, 3, 64, 64)).astype(np.uint8)
    probs = session.run(None, {inp.name: tiles.astype(np.float32) / 255})[0]
    reference = _geounet_probs(UnetClassifier.from_model(model_dir), tiles)
    assert probs.shape == (2, 3, 64, 64)
    assert np.abs(probs - reference).max() <= 1e-4, np.abs(probs - reference).max()
    assert len(np.unique(reference.argmax(1))) > 1  # the comparison is not all one class

    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {"0": "background", "1": "building", "2": "road"}
    assert isinstance(meta["resolution"], float) and meta["resolution"] == 50.0
    # Deepness' code reads tile_size (its documentation says tiles_size): both are there
    assert meta["tile_size"] == meta["tiles_size"] == 64 and isinstance(meta["tile_size"], int)
    assert meta["tiles_overlap"] == 25 and isinstance(meta["tiles_overlap"], int)
    # three classes: every pixel takes its most probable class, as in geounet classify
    assert meta["seg_thresh"] == 0.0 and isinstance(meta["seg_small_segment"], int)
    assert meta["geounet_model"]["in_channels"] == 3


def test_onnx_of_a_sixteen_bit_model_takes_raw_values_and_warns(tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    image = rng.integers(100, 3000, size=(2, 96, 96)).astype(np.uint16)
    labels = (image[0] > 1500).astype(np.uint8)
    model = UnetClassifier(make_fake_data(image=image, labels=labels), **TINY)
    with pytest.warns(UserWarning, match="raw values"):
        out = model.export("onnx", tmp_path / "m16.onnx", tile_size=32, overlap=0)
    tiles = rng.integers(100, 3000, size=(1, 2, 32, 32)).astype(np.uint16)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"image": tiles.astype(np.float32)})[0]
    assert np.abs(probs - _geounet_probs(model, tiles)).max() <= 1e-4


def test_torchscript_equals_eager(model_dir: Path, tmp_path: Path):
    out = export_model(model_dir, "torchscript", tmp_path / "m.pt", tile_size=64, overlap=16)
    scripted = torch.jit.load(str(out))
    model = UnetClassifier.from_model(model_dir)
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 3, 64, 64))).float()
    with torch.no_grad():
        got = scripted(x).numpy()
    assert np.abs(got - _geounet_probs(model, x.numpy().astype(np.uint8))).max() <= 1e-5
    extra = {"geounet.json": ""}
    torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["geounet.json"])["arch"] == model.config.arch


def _unzip_dlpk(path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(dest)
    emds = [n for n in names if n.endswith(".emd")]
    assert len(emds) == 1
    assert {"model.safetensors", "geounet.json", "GeounetClassifier.py"} <= names
    return dest / emds[0]


def test_dlpk_holds_a_valid_emd(model_dir: Path, tmp_path: Path):
    out = export_model(model_dir, "dlpk", tmp_path / "buildings.dlpk", tile_size=128, overlap=64)
    emd = json.loads(_unzip_dlpk(out, tmp_path / "x").read_text())
    assert emd["Framework"] == "PyTorch"
    assert emd["ModelType"] == "ImageClassification"
    assert emd["ModelFile"] == "model.safetensors"
    assert emd["InferenceFunction"] == "GeounetClassifier.py"
    assert (emd["ImageHeight"], emd["ImageWidth"], emd["ModelPadding"]) == (128, 128, 32)
    assert emd["ExtractBands"] == [0, 1, 2] and emd["BatchSize"] >= 1
    assert emd["ModelName"] == "buildings" and isinstance(emd["Version"], str)
    assert isinstance(emd["ModelConfiguration"], str)
    assert [(c["Value"], c["Name"]) for c in emd["Classes"]] == [(1, "building"), (2, "road")]
    assert all(
        len(c["Color"]) == 3 and all(0 <= v <= 255 for v in c["Color"]) for c in emd["Classes"]
    )


def _load_function(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("GeounetClassifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GeounetClassifier()


def _packaged_function(model_dir: Path, tmp_path: Path, tile: int, overlap: int):
    out = export_model(model_dir, "dlpk", tmp_path / "b.dlpk", tile_size=tile, overlap=overlap)
    fn = _load_function(_unzip_dlpk(out, tmp_path / "pkg").parent / "GeounetClassifier.py")
    fn.initialize(model=str(next((tmp_path / "pkg").glob("*.emd"))), device=-1)
    params = fn.getParameterInfo()
    assert [p["name"] for p in params[:2]] == ["raster", "model"]
    config = fn.getConfiguration(**{p["name"]: p["value"] for p in params if "value" in p})
    assert {"extractBands", "padding", "tx", "ty", "inputMask"} <= set(config)
    info = fn.updateRasterInfo(output_info={})["output_info"]
    assert info["bandCount"] == 1 and info["pixelType"] == "u1"
    return fn, config


def test_arcgis_raster_function_runs_one_tile_per_block_and_agrees_with_classify(
    model_dir: Path, tmp_path: Path, make_raster
):
    """ArcGIS Pro hands over padded blocks; each costs one network pass (blending inside a
    block cost up to four), NoData stays NoData, and the assembled map is geounet classify's
    but for a few pixels (``benchmarks/arcgis_blocks.py`` measures it on real scenes)."""
    from benchmark_modules import benchmark_module

    rng = np.random.default_rng(3)
    arr = np.repeat(np.repeat(rng.integers(1, 256, (3, 32, 32)), 8, 1), 8, 2).astype(np.uint8)
    arr[:, 150:170, 150:170] = 0
    image = make_raster(arr, nodata=0)
    model = UnetClassifier.from_model(model_dir)
    classified = model.classify(image, tmp_path / "c.tif", tile_size=128, overlap=32)
    with rasterio.open(classified) as src:
        expected = src.read(1)

    fn, config = _packaged_function(model_dir, tmp_path, 128, 32)
    p, tx = config["padding"], config["tx"]
    assert (p, tx) == (16, 128 - 2 * (16 + 16))  # the padded block and the halo fill a tile

    def arcgis(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
        blocks = fn.updatePixels(
            (0, 0), block.shape, {}, raster_pixels=block.astype(np.float32), raster_mask=mask
        )
        got = blocks["output_pixels"][0]
        assert np.array_equal(blocks["output_mask"][0] == 0, got == 255)
        return got

    with benchmark_module("arcgis_blocks.py", "arcgis_blocks_benchmark") as bench:
        seen = bench.count_passes(fn._load())  # tiles the packaged network runs on
        valid = arr.any(axis=0)
        got = bench.run_blocks(arcgis, arr, valid, tx, p)
        figures = bench.scores(got, expected, tx, building=1)
    assert seen[0] == (256 // tx) ** 2  # one tile per block
    assert np.array_equal(got == 255, expected == 255)  # the NoData square stays NoData
    assert figures["agreement"] >= 0.98, figures
    assert len(np.unique(got)) > 2


def test_arcgis_blocks_at_the_raster_edge_are_mirrored_as_classify_mirrors(
    model_dir: Path, tmp_path: Path, make_raster
):
    """ArcGIS fills the padding beyond the raster's edge with NoData; the function leaves it
    out, so the edge is mirrored as geounet classify mirrors it. A raster of one block: the
    same classes as classify, pixel for pixel."""
    rng = np.random.default_rng(4)
    model = UnetClassifier.from_model(model_dir)
    fn, config = _packaged_function(model_dir, tmp_path, 128, 32)
    p, tx = config["padding"], config["tx"]
    for h, w in ((tx, tx), (40, 50)):  # one block; a raster smaller than a block
        arr = rng.integers(1, 256, size=(3, h, w)).astype(np.uint8)
        image = make_raster(arr, name=f"r{h}.tif")
        classified = model.classify(image, tmp_path / f"c{h}.tif", tile_size=128, overlap=32)
        with rasterio.open(classified) as src:
            expected = src.read(1)
        block = np.zeros((3, tx + 2 * p, tx + 2 * p), np.float32)  # NoData beyond the raster
        block[:, p : p + h, p : p + w] = arr
        mask = block.any(axis=0)
        got = fn.updatePixels((0, 0), block.shape, {}, raster_pixels=block, raster_mask=mask)
        np.testing.assert_array_equal(got["output_pixels"][0][:h, :w], expected)
        assert (got["output_pixels"][0][h:] == 255).all() and (got["output_mask"][0][h:] == 0).all()


def test_arcgis_function_names_its_classes_runs_on_the_device_and_refuses_wrapped_values(
    model_dir: Path, tmp_path: Path
):
    """The output carries the class names and colours (a raster attribute table, thematic);
    the device ArcGIS passes is used; 16-bit values are never cast into a uint8 model's range
    (1020 became 252)."""
    out = export_model(model_dir, "dlpk", tmp_path / "b.dlpk", tile_size=128, overlap=64)
    fn = _load_function(_unzip_dlpk(out, tmp_path / "pkg").parent / "GeounetClassifier.py")
    fn.initialize(model=str(next((tmp_path / "pkg").glob("*.emd"))), device=-1)
    params = fn.getParameterInfo()
    config = fn.getConfiguration(**{p["name"]: p["value"] for p in params if "value" in p})
    info = fn.updateRasterInfo(output_info={})["output_info"]
    rows = [f["attributes"] for f in json.loads(info["rasterAttributeTable"])["features"]]
    assert [(r["Value"], r["Class"]) for r in rows] == [(1, "building"), (2, "road")]
    assert all({"Red", "Green", "Blue", "OID"} <= set(r) for r in rows)
    assert fn.updateKeyMetadata(None, -1)["datatype"] == "Thematic"
    side = config["tx"] + 2 * config["padding"]
    block = np.full((3, side, side), 1020, np.uint16)
    assert side + 2 * 16 == 128  # one tile: the block, its padding, the halo
    with pytest.raises(ValueError, match=r"values reach 1020 .* uint8 imagery"):
        fn.updatePixels((0, 0), block.shape, {}, raster_pixels=block)
    assert fn.model.device == "cpu"  # device=-1: the CPU
    masked = block.copy()  # values beyond the range under NoData do not matter
    valid = np.ones((side, side), bool)
    valid[:8] = False
    masked[:, valid] = 100
    fn.updatePixels((0, 0), block.shape, {}, raster_pixels=masked, raster_mask=valid[None])


def test_arcgis_bands_argument_chooses_the_bands_arcgis_extracts(model_dir: Path, tmp_path: Path):
    """A blue, green, red raster for a red, green, blue model: the tool's *Bands* model
    argument (3,2,1) says so, as ``geounet classify --bands`` does; empty keeps the package's."""
    fn, config = _packaged_function(model_dir, tmp_path, 128, 32)
    assert config["extractBands"] == (0, 1, 2)
    assert next(p for p in fn.getParameterInfo() if p["name"] == "bands")["value"] == ""
    assert fn.getConfiguration(bands="3, 2, 1")["extractBands"] == (2, 1, 0)
    assert fn.getConfiguration(bands="1,1,1")["extractBands"] == (0, 0, 0)
    for bad in ("3,2", "3,2,x", "0,1,2", "4,3,2,1"):
        with pytest.raises(ValueError, match=r"give 3 band numbers .* package's bands \[1, 2, 3\]"):
            fn.getConfiguration(bands=bad)


def test_arcgis_blocks_fill_one_tile_with_classifys_halo():
    """The packaged function (no geounet import at its top) sizes blocks with the halo
    predict_array adds at overlap 0; a padding that leaves no block is refused."""
    from geounet.app import arcgis
    from geounet.inference.blending import MIN_HALO, TilePlan

    assert arcgis.HALO == MIN_HALO
    side = arcgis.block_size(512, 32) + 2 * 32
    plan = TilePlan.build(side, side, tile_size=512, overlap=0, blend="spline")
    assert (len(plan.row_starts), len(plan.col_starts), plan.tile_h) == (1, 1, 512)
    fn = arcgis.GeounetClassifier()
    fn.tile_size = 512
    with pytest.raises(ValueError, match="padding 240 leaves no block"):
        fn.getConfiguration(padding=240)


def test_arcgis_function_refuses_cells_far_from_the_models_pixel_size(
    model_dir: Path, tmp_path: Path
):
    """classify resamples a scene to the model's pixel size; ArcGIS hands the raster function
    blocks at the raster's cell size, so a raster 2 times coarser is refused with the way to
    resample it (a 25 % difference passes; an unreadable description is not checked)."""
    fn, _ = _packaged_function(model_dir, tmp_path, 128, 32)
    gsd = fn.emd["ModelPixelSizeMetres"]
    assert gsd == pytest.approx(UnetClassifier.from_model(model_dir).config.gsd_m)
    utm = {"spatialReference": 32616, "extent": (500000.0, 3700000.0, 500100.0, 3700100.0)}
    with pytest.raises(ValueError, match=r"cells are .* m but the model was trained on .*Resample"):
        fn.updateRasterInfo(output_info={}, raster_info={**utm, "cellSize": (2 * gsd, 2 * gsd)})
    fn.updateRasterInfo(output_info={}, raster_info={**utm, "cellSize": (1.2 * gsd, 1.2 * gsd)})
    fn.updateRasterInfo(output_info={}, raster_info={"cellSize": (2 * gsd, 2 * gsd)})  # no SR
    # Web Mercator at 47 degrees north: 0.3 map units are 0.2 ground metres
    mercator = {"spatialReference": 102100, "extent": (0.0, 6e6, 600.0, 6000600.0)}
    assert arcgis.raster_cell_m({**mercator, "cellSize": (0.3, 0.3)}) == pytest.approx(
        0.2033, abs=1e-3
    )


def test_arcgis_device_ids_name_the_gpu(monkeypatch):
    """ArcGIS passes a GPU id (or -1 for the CPU); the model was always put on the CPU."""
    from geounet.app import arcgis

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [arcgis.torch_device(d) for d in (0, "1", -1, None)] == [
        "cuda:0", "cuda:1", "cpu", "cpu"
    ]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert arcgis.torch_device(0) == "cpu"  # no GPU here: the CPU, not an error


def test_export_refuses_bad_settings_and_existing_outputs(model_dir: Path, tmp_path: Path):
    with pytest.raises(InvalidParameterError, match="format"):
        export_model(model_dir, "tflite", tmp_path / "m.tflite")
    with pytest.raises(InvalidParameterError, match="multiple of 32"):
        export_model(model_dir, "onnx", tmp_path / "m.onnx", tile_size=100)
    target = tmp_path / "m.pt"
    target.write_text("keep")
    with pytest.raises(OutputExistsError):
        export_model(model_dir, "torchscript", target)
    assert target.read_text() == "keep"
    assert set(EXPORT_FORMATS) == {"onnx", "dlpk", "torchscript"}


@pytest.mark.parametrize(("tile", "overlap"), [(32, 0), (128, 96)])
def test_dlpk_refuses_tiles_its_raster_function_cannot_use(
    model_dir: Path, tmp_path, tile, overlap
):
    """ArcGIS Pro's raster function tiles as geounet classify does (tile >= 64, overlap at
    most half a tile): such a package was written, then failed on every block in ArcGIS."""
    with pytest.raises(InvalidParameterError, match="not allowed for ArcGIS Pro"):
        export_model(model_dir, "dlpk", tmp_path / "m.dlpk", tile_size=tile, overlap=overlap)
    assert not (tmp_path / "m.dlpk").exists()


def test_export_names_a_dotted_model_folder_whole(model_dir: Path, tmp_path: Path):
    """``kampala.v2`` exports to ``kampala.v2.dlpk``, not ``kampala.dlpk``."""
    import shutil

    dotted = tmp_path / "kampala.v2"
    shutil.copytree(model_dir, dotted)
    out = export_model(dotted, "dlpk", tile_size=128)
    assert out == tmp_path / "kampala.v2.dlpk" and zipfile.is_zipfile(out)


def test_cli_export(model_dir: Path, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "b.dlpk"
    args = ["export", str(model_dir), "--format", "dlpk", "--out", str(out), "--tile-size", "128"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert zipfile.is_zipfile(out)
    again = runner.invoke(cli, args)
    assert again.exit_code == 2
    assert len(again.output.strip().splitlines()) == 1 and "--overwrite" in again.output
