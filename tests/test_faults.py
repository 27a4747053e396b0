"""Faults while running: damaged inputs found mid-run, signals, two runs on one output, a full disk.

Every fault ends with one clear line (exit 2 in the CLI, 130 for Ctrl-C) and nothing left
under the output's name: no partial output, no temporary file, no lock file (after SIGKILL,
only hidden temporary files can remain, and the next run takes over the stale lock).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from click.testing import CliRunner
from rasterio.transform import from_origin

from geounet.cli.main import cli
from geounet.core.errors import InvalidRasterError, OutputNotWritableError

UTM = "EPSG:32616"
OPTS = ["--tile-size", "64", "--overlap", "16"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved, untrained 3-band paper U-Net (4 channels, depth 2): fast to run."""
    from model_fakes import make_fake_data

    from geounet.app.classifier import UnetClassifier

    data = make_fake_data(bands=3, chip=32, size=64)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    return model.save(tmp_path_factory.mktemp("models") / "tiny")


def write_image(path: Path, size: int, *, compress: str | None = None, block: int = 64) -> Path:
    """A textured 3-band uint8 GeoTIFF, tiled, with its directory (IFD) before the tiles."""
    rng = np.random.default_rng(0)
    arr = rng.integers(40, 200, (3, size, size), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": UTM, "transform": from_origin(500000, 3700000, 0.5, 0.5)}  # fmt: skip
    staging = path.with_name("staging.tif")
    with rasterio.open(staging, "w", **profile) as dst:
        dst.write(arr)
    extra = {"compress": compress} if compress else {}
    with rasterio.open(staging) as src:  # CreateCopy writes the directory first
        rasterio.shutil.copy(src, path, tiled=True, blockxsize=block, blockysize=block, **extra)
    staging.unlink()
    return path


def tile_offsets(path: Path) -> list[int]:
    """Byte offsets of the tiles of a little-endian classic TIFF (tag 324, TileOffsets)."""
    blob = path.read_bytes()
    assert blob[:4] == b"II*\x00", "a little-endian classic TIFF"
    ifd = struct.unpack_from("<I", blob, 4)[0]
    for i in range(struct.unpack_from("<H", blob, ifd)[0]):
        tag, kind, count, value = struct.unpack_from("<HHII", blob, ifd + 2 + 12 * i)
        if tag == 324:
            fmt = f"<{count}{'I' if kind == 4 else 'Q'}"
            return list(struct.unpack_from(fmt, blob, value)) if count > 1 else [value]
    raise AssertionError("no TileOffsets tag")


def leftovers(folder: Path, name: str = "out") -> list[str]:
    """Files of ``folder`` that belong to output ``name``: the output, temporaries, locks."""
    return sorted(p.name for p in folder.iterdir() if name in p.name)


def one_error_line(stderr: str) -> str:
    """The one line of stderr besides the progress bar's updates (asserted to be an error)."""
    parts = re.split(r"[\r\n]", stderr)
    lines = [ln for ln in parts if ln.strip() and not re.match(r"^\w+: +\d+%\|", ln)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("geounet: error:"), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- damaged inputs


def truncated(tmp_path: Path) -> Path:
    """Header and directory intact, the last 60 % of the tiles missing."""
    path = write_image(tmp_path / "cut.tif", 1024)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * 0.4)])
    return path


def corrupt_block(tmp_path: Path) -> Path:
    """A deflate tile in rows 256-320, columns 256-320 overwritten with garbage; a block the
    range check's sample windows never read, so the error comes while rows are written."""
    path = write_image(tmp_path / "corrupt.tif", 1024, compress="deflate")
    offsets = tile_offsets(path)
    per_row = 1024 // 64
    start = offsets[4 * per_row + 4]
    blob = bytearray(path.read_bytes())
    blob[start : start + 64] = bytes(range(64))
    path.write_bytes(bytes(blob))
    return path


@pytest.mark.parametrize("damage", [truncated, corrupt_block], ids=lambda f: f.__name__)
def test_read_error_mid_run_is_one_line_and_no_output(damage, model_dir, tmp_path, one_thread):
    from geounet.app.classifier import UnetClassifier

    image = damage(tmp_path)
    with rasterio.open(image) as src:  # the header opens: the damage is found while reading
        assert src.shape == (1024, 1024)
    clf = UnetClassifier.from_model(model_dir)
    with pytest.raises(InvalidRasterError) as err:
        clf.classify(image, tmp_path / "out.tif", tile_size=64, overlap=16, progress=False)
    msg = str(err.value)
    assert image.name in msg and "download it again" in msg and "rows" in msg, msg
    if damage is corrupt_block:
        assert "rows 2" in msg, msg  # found in the tile loop, not by an up-front check
    assert leftovers(tmp_path) == []
    result = CliRunner().invoke(cli, ["classify", str(image), "--model", str(model_dir),
                                      "--out", str(tmp_path / "out.tif"), *OPTS])  # fmt: skip
    assert result.exit_code == 2, result.output + result.stderr + repr(result.exception)
    assert image.name in one_error_line(result.stderr)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_chip_that_fails_to_decode_during_training(kind, tmp_path, one_thread):
    """An image chip is first read in the training loop, a label chip already when the
    classifier measures the training objects' sizes; both are one clear error."""
    from geounet.app.classifier import UnetClassifier
    from geounet.data.prepare import prepare_data

    image = write_image(tmp_path / "img.tif", 128)
    labels = np.zeros((128, 128), np.uint8)
    labels[20:90, 30:100] = 1
    lab = tmp_path / "labels.tif"
    with rasterio.open(image) as src:
        profile = {**src.profile, "count": 1}
    with rasterio.open(lab, "w", **profile) as dst:
        dst.write(labels[None])
    chips = tmp_path / "chips"
    prepare_data(image, lab, classes=["building"], chip_size=32, out_dir=chips)
    victim = sorted((chips / kind).iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:300])  # a chip cut short
    data = prepare_data(chips)
    with pytest.raises(InvalidRasterError, match=victim.name):
        model = UnetClassifier(data, backbone=None, base_channels=4, depth=2)
        model.fit(epochs=1, lr=1e-3, progress=False, checkpoint=False)
    out = tmp_path / "model"
    args = ["train", str(chips), "--out", str(out), "--backbone", "unet-classic", "--weights",
            "none", "--epochs", "1", "--lr", "1e-3", "--batch-size", "2"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output + result.stderr + repr(result.exception)
    assert victim.name in one_error_line(result.stderr)
    assert not out.exists() and leftovers(tmp_path, "model") == []


# ----------------------------------------------------------------------------- processes


def start_classify(image: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``geounet classify`` in a child process (stderr piped: the progress bar shows there)."""
    cmd = [sys.executable, "-m", "geounet", "classify", str(image), "--model", str(model),
           "--out", str(out), *OPTS, *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # a suite started in the background (`cmd &` without job control) ignores SIGINT, and the
    # child would inherit that: give it the default, so Ctrl-C reaches Python as it does in a shell
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if os.name == "posix"
        else None,
    )


def wait_for_progress(proc: subprocess.Popen, timeout: float = 180) -> bytes:
    """Read the child's stderr until the progress bar shows a finished tile; return it."""
    seen, end = b"", time.monotonic() + timeout
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < end:
        chunk = proc.stderr.read() or b""
        seen += chunk
        if re.search(rb"\| *[1-9]\d*/\d+ \[", seen):
            os.set_blocking(proc.stderr.fileno(), True)
            return seen
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before any progress: {seen.decode()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no progress within {timeout} s: {seen.decode()}")


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2048 x 2048 image: some seconds of classification with the tiny model."""
    return write_image(tmp_path_factory.mktemp("big") / "big.tif", 2048)


def test_sigint_exits_130_and_removes_its_temporary_files(big_image, model_dir, tmp_path):
    out = tmp_path / "out.tif"
    proc = start_classify(big_image, model_dir, out)
    wait_for_progress(proc)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest.decode()
    assert "interrupted" in rest.decode()
    assert leftovers(tmp_path) == []  # no output, no temporary file, no lock


def test_sigkill_leaves_nothing_under_the_output_name(big_image, model_dir, tmp_path):
    out = tmp_path / "out.tif"
    proc = start_classify(big_image, model_dir, out)
    wait_for_progress(proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not (tmp_path / "out_probabilities.tif").exists()
    left = leftovers(tmp_path)
    hidden = (".out.", ".out_probabilities.")  # the class raster's and its probabilities'
    assert left and all(name.startswith(hidden) for name in left), left  # hidden only
    small = write_image(tmp_path / "small.tif", 96)
    result = CliRunner().invoke(cli, ["-q", "classify", str(small), "--model", str(model_dir),
                                      "--out", str(out), *OPTS])  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr  # the stale lock is taken over
    assert out.exists() and not (tmp_path / ".out.tif.lock").exists()
    assert not (tmp_path / ".out_probabilities.tif.lock").exists()


def test_two_runs_on_one_output_one_finishes_the_other_refuses(big_image, model_dir, tmp_path):
    out = tmp_path / "out.tif"
    first = start_classify(big_image, model_dir, out, "--tta", "flips")
    wait_for_progress(first)
    second = CliRunner().invoke(cli, ["classify", str(big_image), "--model", str(model_dir),
                                      "--out", str(out), *OPTS])  # fmt: skip
    assert first.poll() is None, "the first run ended too early for this test"
    assert second.exit_code == 2, second.output + second.stderr
    line = one_error_line(second.stderr)
    assert "another geounet run" in line and "out.tif" in line, line
    _, rest = first.communicate(timeout=300)
    assert first.returncode == 0, rest.decode()
    with rasterio.open(out) as src:  # whole: every pixel readable and classified
        classes = src.read(1)
    assert classes.shape == (2048, 2048) and set(np.unique(classes).tolist()) <= {0, 1}
    assert leftovers(tmp_path) == ["out.tif", "out_probabilities.tif"]


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 2 MiB tmpfs (the tests run as root); skipped where mounting is not allowed."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_is_a_clear_error_without_leftovers(small_disk, model_dir, tmp_path, one_thread):
    from geounet.app.classifier import UnetClassifier

    image = write_image(tmp_path / "img.tif", 1536)
    out, probs = small_disk / "out.tif", small_disk / "probs.tif"
    clf = UnetClassifier.from_model(model_dir)
    with pytest.raises(OutputNotWritableError) as err:
        clf.classify(image, out, probabilities=probs, tile_size=64, overlap=16, progress=False)
    assert "disk is full" in str(err.value) and "another folder" in str(err.value)
    assert sorted(os.listdir(small_disk)) == []
    args = ["classify", str(image), "--model", str(model_dir), "--out", str(out),
            "--probabilities", str(probs), *OPTS]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output + result.stderr + repr(result.exception)
    assert "disk is full" in one_error_line(result.stderr)
    assert sorted(os.listdir(small_disk)) == []
    assert shutil.disk_usage(small_disk).used < 64 * 1024
