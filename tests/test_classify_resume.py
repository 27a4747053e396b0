"""classify(resume=True) / geounet classify --resume: continue an interrupted classification
from the last completed band of rows; the result is identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geounet.cli.main import cli
from geounet.core.errors import InvalidParameterError
from geounet.inference import resume as resume_module
from geounet.inference.resume import resume_dir

OPTS = {"tile_size": 64, "overlap": 16, "progress": False}
CLI_OPTS = ["--tile-size", "64", "--overlap", "16"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_fakes import make_fake_data

    from geounet.app.classifier import UnetClassifier

    data = make_fake_data(bands=3, chip=32, size=64)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    return model.save(tmp_path_factory.mktemp("models") / "tiny")


def write_image(path: Path, height: int, width: int) -> Path:
    rng = np.random.default_rng(1)
    arr = rng.integers(40, 200, (3, height, width)).astype(np.uint8)
    arr[:, height // 3 : height // 2, width // 4 : width // 2] = 230  # something to find
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32616",
        "transform": from_origin(500000, 3700000, 0.5, 0.5),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> int:
    """Bands of 48 rows, so that a small image has several."""
    monkeypatch.setattr(resume_module, "BAND_ROWS", 48)
    return 48


def test_resume_without_interruption_equals_a_plain_run(model_dir, tmp_path, small_bands):
    from geounet.app.classifier import UnetClassifier

    image = write_image(tmp_path / "img.tif", 200, 150)
    clf = UnetClassifier.from_model(model_dir)
    plain = clf.classify(image, tmp_path / "plain.tif", probabilities=tmp_path / "pp.tif", **OPTS)
    out = tmp_path / "resumable.tif"
    clf.classify(image, out, probabilities=tmp_path / "rp.tif", resume=True, **OPTS)
    np.testing.assert_array_equal(read(out), read(plain))
    np.testing.assert_array_equal(read(tmp_path / "rp.tif"), read(tmp_path / "pp.tif"))
    with rasterio.open(tmp_path / "rp.tif") as rp, rasterio.open(tmp_path / "pp.tif") as pp:
        np.testing.assert_array_equal(rp.dataset_mask(), pp.dataset_mask())
    assert not resume_dir(out).exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "img.tif",
        "plain.tif",
        "pp.tif",
        "resumable.tif",
        "rp.tif",
    ]


def test_interrupted_run_continues_from_the_last_band(
    model_dir, tmp_path, small_bands, monkeypatch
):
    from geounet.app.classifier import UnetClassifier

    image = write_image(tmp_path / "img.tif", 200, 150)
    clf = UnetClassifier.from_model(model_dir)
    plain = clf.classify(image, tmp_path / "plain.tif", **OPTS)
    out = tmp_path / "out.tif"
    saves = []
    original = resume_module.BandSink._save

    def save_then_interrupt(self):
        if len(saves) == 2:
            raise KeyboardInterrupt
        saves.append(self.next)
        original(self)

    monkeypatch.setattr(resume_module.BandSink, "_save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        clf.classify(image, out, resume=True, **OPTS)
    kept = sorted(p.name for p in resume_dir(out).iterdir())
    bands = ["band_000000.classes.npy", "band_000000.probs.npy", "band_000001.classes.npy"]
    assert kept == [*bands, "band_000001.probs.npy", "key.json"]  # probabilities by default
    assert not out.exists()
    monkeypatch.setattr(resume_module.BandSink, "_save", original)
    starts: list[int] = []
    monkeypatch.setattr(resume_module, "BandSink", _recording(starts))
    clf.classify(image, out, resume=True, **OPTS)
    assert starts == [96]  # continued after the two saved bands of 48 rows
    np.testing.assert_array_equal(read(out), read(plain))
    assert not resume_dir(out).exists()


def _recording(starts: list[int]) -> type:
    class Recording(resume_module.BandSink):
        def __init__(self, folder, start, height, probs):
            starts.append(start)
            super().__init__(folder, start, height, probs)

    return Recording


def test_resume_with_other_options_is_refused(model_dir, tmp_path, small_bands, monkeypatch):
    from geounet.app.classifier import UnetClassifier

    image = write_image(tmp_path / "img.tif", 200, 150)
    clf = UnetClassifier.from_model(model_dir)
    original = resume_module.BandSink._save

    def interrupt(self):
        if self.next >= 48:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(resume_module.BandSink, "_save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        clf.classify(image, tmp_path / "out.tif", resume=True, **OPTS)
    monkeypatch.setattr(resume_module.BandSink, "_save", original)
    with pytest.raises(InvalidParameterError, match="options") as err:
        clf.classify(image, tmp_path / "out.tif", resume=True, **{**OPTS, "overlap": 8})
    assert ".out.tif.resume" in str(err.value)
    with pytest.raises(InvalidParameterError, match="options"):  # other bands read
        clf.classify(image, tmp_path / "out.tif", resume=True, **{**OPTS, "bands": (3, 2, 1)})
    assert not (tmp_path / "out.tif").exists()


def test_cli_resume_after_sigkill_is_identical(model_dir, tmp_path):
    """A real interruption: the CLI in a child process killed once a band is saved (bands
    of 512 rows), then `geounet classify --resume` finishes the job."""
    image = write_image(tmp_path / "big.tif", 2048, 1024)
    out = tmp_path / "out.tif"
    args = ["-q", "classify", str(image), "--model", str(model_dir), "--out", str(out)]
    args += ["--resume", *CLI_OPTS]
    cmd = [sys.executable, "-m", "geounet", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_band = resume_dir(out) / "band_000000.classes.npy"
    end = time.monotonic() + 180
    while not first_band.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists() and first_band.exists()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + result.stderr
    plain = tmp_path / "plain.tif"
    again = CliRunner().invoke(
        cli,
        ["-q", "classify", str(image), "--model", str(model_dir), "--out", str(plain), *CLI_OPTS],
    )
    assert again.exit_code == 0, again.output + again.stderr
    np.testing.assert_array_equal(read(out), read(plain))
    assert not resume_dir(out).exists()
