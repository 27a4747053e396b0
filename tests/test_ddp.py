"""Distributed data-parallel training (``fit(..., ddp=True)``, ``geounet train --ddp``).

Two processes on the CPU with the gloo backend, started by torchrun as a subprocess (as a
user launches them), train a tiny U-Net; the test process trains the same network on one
process with the same *global* batches (``GlobalBatchSampler`` with ``world_size=1`` and
twice the batch size) and compares.

Tolerances, and why:

- ``exact`` (pixel-mean cross-entropy, no BatchNorm, no dropout, augmentation off): the
  mean of the two ranks' gradients is the gradient of the global batch, so only the order
  of float32 sums differs: weights within 1e-5 (measured 2.7e-7 after 6 AdamW steps);
- ``dice`` (cross-entropy + Dice, no BatchNorm): the Dice term is a ratio of sums over the
  batch, and the mean of two half-batch Dice losses is not the whole batch's, so the
  gradients differ a little and AdamW (whose steps have the size of the learning rate
  whatever the gradient) carries that into the weights: the distance between the two
  results is within 15 % of the distance the weights travelled (measured 6 %);
- ``bn_dice`` (the recipe's loss, BatchNorm): torch 2.14 has no SyncBatchNorm on the CPU,
  so each rank normalises with the statistics of its own 2 chips: the forward pass itself
  differs, the weights end far apart (measured 60 % of the distance travelled), so only the
  training loss curve (within 2 %) and the validation mIoU (within 0.05) are compared; the
  ranks' weights and running statistics are identical bit for bit (averaged every step).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from geounet.core.errors import InvalidParameterError
from geounet.model.distributed import GlobalBatchSampler, ShardSampler

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
pytestmark = pytest.mark.slow


def _torchrun(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node 2 ARGS`` (CPU, one thread per process).

    torchrun and its workers run in a session of their own, killed as a whole on a timeout.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen(
        [*cmd, *args], cwd=cwd, env=env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-2000:]}{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in state.items() if v.is_floating_point()}


def _params(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in _floats(state).items() if "running" not in k}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Every configuration of ddp_worker.py trained on 2 gloo processes: the output folder."""
    out = tmp_path_factory.mktemp("ddp")
    r = _torchrun([str(TESTS / "ddp_worker.py"), str(out)], cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _single_process(name: str) -> tuple[dict, dict, dict]:
    """Initial and final weights and history of one process on the same global batches."""
    sys.path.insert(0, str(TESTS))
    from ddp_worker import BATCH, EPOCHS, build, fit_options, weight_average
    from model_fakes import make_fake_data

    torch.set_num_threads(1)
    data = make_fake_data(batch_size=BATCH)
    chips = data.train_dl.dataset
    data.train_dl = DataLoader(chips, batch_sampler=GlobalBatchSampler(len(chips), 2 * BATCH))
    with weight_average(name):
        clf = build(data, name)
        start = {k: v.clone() for k, v in clf.network.state_dict().items()}
        history = clf.fit(EPOCHS, **fit_options())
    return start, clf.network.state_dict(), history.to_dict("list")


def _ranks(out: Path, name: str) -> tuple[dict, dict, dict]:
    r0, r1 = (load_file(str(out / f"{name}_rank{r}.safetensors")) for r in (0, 1))
    return r0, r1, json.loads((out / f"{name}_rank0.json").read_text())


def test_ddp_ranks_identical_and_model_written_once(ddp_results):
    from geounet import UnetClassifier

    for name in ("exact", "dice", "bn_dice", "average"):
        r0, r1, _ = _ranks(ddp_results, name)
        assert r0.keys() == r1.keys()
        assert all(torch.equal(r0[k], r1[k]) for k in r0), name  # BN statistics included
        loaded = UnetClassifier.from_model(ddp_results / f"{name}_model")
        saved = loaded.network.state_dict()
        assert all(torch.equal(saved[k], r0[k]) for k in r0), name
    leftovers = [p.name for p in ddp_results.iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary folder of a second, racing save


def test_ddp_matches_single_process_on_the_same_global_batch(ddp_results):
    r0, _, hist = _ranks(ddp_results, "exact")
    start, ref, ref_hist = _single_process("exact")
    ddp, single = _floats(r0), _floats(ref)
    assert ddp.keys() == single.keys()
    assert max(float((ddp[k] - single[k]).abs().max()) for k in ddp) < 1e-5
    assert _distance(_params(start), _params(ref)) > 1e-2  # the weights did train
    np.testing.assert_allclose(hist["train_loss"], ref_hist["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(hist["valid_miou"], ref_hist["valid_miou"], atol=1e-4)
    np.testing.assert_allclose(hist["lr"], ref_hist["lr"], rtol=1e-12)


def test_ddp_keeps_the_same_weight_average_as_a_single_process(ddp_results):
    r0, _, hist = _ranks(ddp_results, "average")
    _, ref, ref_hist = _single_process("average")
    ddp, single = _floats(r0), _floats(ref)
    assert max(float((ddp[k] - single[k]).abs().max()) for k in ddp) < 1e-5
    np.testing.assert_allclose(hist["valid_miou"], ref_hist["valid_miou"], atol=1e-4)
    last, _, _ = _ranks(ddp_results, "exact")  # the same run without the average
    assert _distance(_params(r0), _params(last)) > 1e-3  # what was kept is the average


def test_ddp_with_dice_and_batchnorm_within_tolerance(ddp_results):
    r0, _, _ = _ranks(ddp_results, "dice")
    start, ref, _ = _single_process("dice")
    travelled = _distance(_params(start), _params(ref))
    assert _distance(_params(r0), _params(ref)) < 0.15 * travelled

    _, _, hist = _ranks(ddp_results, "bn_dice")
    _, _, ref_hist = _single_process("bn_dice")
    np.testing.assert_allclose(hist["train_loss"], ref_hist["train_loss"], rtol=0.02)
    np.testing.assert_allclose(hist["valid_miou"], ref_hist["valid_miou"], atol=0.05)


def test_ddp_budget_and_lr_finder_of_rank_0_keep_the_ranks_in_step(ddp_results):
    r0, r1, hist = _ranks(ddp_results, "budget")
    other = json.loads((ddp_results / "budget_rank1.json").read_text())
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert hist == other  # same epochs, losses, scores, learning rates (rank 0's clock)
    assert 1 <= len(hist["epoch"]) < 400  # the 3 s budget (or early stopping) ended the plan
    assert (ddp_results / "budget_model" / "geounet.json").exists()


def test_global_batches_are_the_single_process_batches():
    ranks = [GlobalBatchSampler(23, 3, world_size=2, rank=r, seed=7) for r in (0, 1)]
    whole = GlobalBatchSampler(23, 6, seed=7)
    for _ in range(2):  # two epochs: a new permutation each
        parts = [list(s) for s in ranks]
        assert len(parts[0]) == len(parts[1]) == len(whole) == 3  # 23 // 6; 5 chips dropped
        assert [a + b for a, b in zip(*parts, strict=True)] == list(whole)
    first = list(GlobalBatchSampler(23, 6, seed=7))
    assert first != list(whole)  # ``whole`` is in its third epoch now
    shards = [list(ShardSampler(5, world_size=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(5))
    with pytest.raises(InvalidParameterError, match="global batch"):
        GlobalBatchSampler(5, 4, world_size=2, rank=0)


def test_ddp_outside_torchrun_is_refused(monkeypatch):
    sys.path.insert(0, str(TESTS))
    from ddp_worker import build
    from model_fakes import make_fake_data

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    clf = build(make_fake_data(batch_size=2), "exact")
    with pytest.raises(InvalidParameterError, match="torchrun"):
        clf.fit(1, lr=1e-3, ddp=True, progress=False)
    with pytest.raises(InvalidParameterError, match="resume"):
        clf.fit(1, lr=1e-3, ddp=True, resume=True, progress=False)
    with pytest.raises(InvalidParameterError, match="calibrate_decision"):
        clf.fit(1, lr=1e-3, ddp=True, calibrate_decision=True, progress=False)


def test_cli_train_ddp_writes_one_loadable_model(tmp_path):
    from geounet import UnetClassifier, prepare_data

    sys.path.insert(0, str(TESTS))
    from conftest import write_geotiff
    from model_fakes import synthetic_scene

    image, labels = synthetic_scene(128, 3, seed=1)
    write_geotiff(tmp_path / "scene.tif", image)
    write_geotiff(tmp_path / "labels.tif", labels)
    chips = tmp_path / "chips"
    prepare_data(tmp_path / "scene.tif", tmp_path / "labels.tif", classes={1: "building"},
                 chip_size=32, out_dir=chips)  # fmt: skip
    model = tmp_path / "model"
    args = ["-m", "geounet", "-q", "train", str(chips), "--out", str(model), "--ddp",
            "--backbone", "unet-classic", "--weights", "none", "--epochs", "1", "--lr", "1e-3",
            "--batch-size", "2"]  # fmt: skip
    r = _torchrun(args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("model: ") == 1  # reported (and written) by rank 0 only
    clf = UnetClassifier.from_model(model)
    assert clf.config.arch == "unet-classic" and len(clf.history) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chips", "labels.tif", "model", "scene.tif"
    ]  # fmt: skip
