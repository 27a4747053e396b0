"""Losses: CE / Dice / Lovász and their sums, nodata, class weights, the U-Net weight map."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage

from geounet.core.errors import InvalidParameterError
from geounet.model.losses import (
    LOSS_NAMES,
    build_loss,
    dice_loss,
    lovasz_softmax_loss,
    unet_weight_map,
)

IGNORE = 255


def _target(seed: int = 0, shape=(2, 16, 16), k: int = 3, ignore_frac: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, k, shape, generator=g)
    t[torch.rand(shape, generator=g) < ignore_frac] = IGNORE
    return t


def _logits_towards(target: torch.Tensor, k: int, strength: float, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(target.shape[0], k, *target.shape[1:], generator=g)
    onehot = F.one_hot(torch.where(target == IGNORE, 0, target), k).permute(0, 3, 1, 2)
    return noise + strength * onehot.float()


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("boundary_weight", [0.0, 10.0])
def test_loss_decreases_towards_target(name, boundary_weight):
    target = _target()
    loss_fn = build_loss(name, boundary_weight=boundary_weight)
    values = [float(loss_fn(_logits_towards(target, 3, s), target)) for s in (0.0, 1.0, 3.0, 8.0)]
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert values[-1] < 0.05


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("boundary_weight", [0.0, 5.0])
def test_ignored_pixels_do_not_contribute(name, boundary_weight):
    target = _target(ignore_frac=0.3)
    loss_fn = build_loss(name, class_weights=[1.0, 2.0, 0.5], boundary_weight=boundary_weight)
    logits = _logits_towards(target, 3, 1.0)
    changed = logits.clone()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed[ignored] = torch.randn(int(ignored.sum())) * 50
    assert torch.allclose(loss_fn(logits, target), loss_fn(changed, target), atol=1e-6)


def test_all_ignored_gives_zero_with_gradient():
    logits = torch.randn(1, 3, 8, 8, requires_grad=True)
    target = torch.full((1, 8, 8), IGNORE)
    loss = build_loss("ce+dice", boundary_weight=10.0)(logits, target)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_ce_matches_pytorch_and_class_weights_change_it():
    target = _target()
    logits = _logits_towards(target, 3, 0.5)
    plain = build_loss("ce")(logits, target)
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert torch.allclose(plain, expected)
    weights = [0.2, 1.0, 5.0]
    weighted = build_loss("ce", class_weights=weights)(logits, target)
    expected_w = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=IGNORE)
    assert torch.allclose(weighted, expected_w)
    assert abs(float(weighted) - float(plain)) > 1e-3
    both = build_loss("ce+dice", class_weights=weights)(logits, target)
    assert abs(float(both) - float(build_loss("ce+dice")(logits, target))) > 1e-3
    as_mapping = build_loss("ce", class_weights={0: 0.2, 1: 1.0, 2: 5.0})(logits, target)
    assert torch.allclose(as_mapping, expected_w)


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if "+" in n])
def test_a_sum_of_losses_is_the_sum_of_its_terms(name):
    target = _target()
    logits = _logits_towards(target, 3, 0.7)
    total = build_loss(name)(logits, target)
    parts = sum(build_loss(term)(logits, target) for term in name.split("+"))
    assert torch.allclose(total, parts)


def _iou_loss(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - IoU averaged over the classes present in target, ignored pixels left out."""
    valid = target != IGNORE
    losses = []
    for c in torch.unique(target[valid]).tolist():
        p, t = (pred == c) & valid, (target == c) & valid
        losses.append(1.0 - float((p & t).sum()) / float((p | t).sum()))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_of_confident_predictions_is_one_minus_iou(seed):
    # With probabilities of 0 or 1 the Lovász extension equals the Jaccard loss itself.
    target = _target(seed, shape=(2, 12, 12), k=3, ignore_frac=0.2)
    g = torch.Generator().manual_seed(seed + 10)
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.3,
        torch.randint(0, 3, target.shape, generator=g),
        target.clamp(max=2),
    )
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 60.0
    got = float(lovasz_softmax_loss(logits, target, ignore_index=IGNORE))
    assert got == pytest.approx(_iou_loss(pred, target), abs=1e-5)


def test_lovasz_gradient_lowers_the_loss():
    target = _target(3)
    logits = _logits_towards(target, 3, 0.5).requires_grad_(True)
    loss = lovasz_softmax_loss(logits, target)
    loss.backward()
    stepped = (logits - 50.0 * logits.grad).detach()
    assert float(lovasz_softmax_loss(stepped, target)) < float(loss.detach())
    assert float(logits.grad[(target == IGNORE).unsqueeze(1).expand_as(logits)].abs().sum()) == 0


def test_dice_by_hand():
    # Two pixels of class 1, one of class 0, one ignored; perfectly confident logits.
    target = torch.tensor([[[1, 1], [0, IGNORE]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, :] = 100.0
    logits[0, 0, 1, 0] = 100.0
    assert float(dice_loss(logits, target, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)
    # Uniform probabilities: class 0 dice = 2*0.5/(1.5+1), class 1 = 2*1/(1.5+2).
    uniform = torch.zeros(1, 2, 2, 2)
    expected = 1 - (1.0 / 2.5 + 2.0 / 3.5) / 2
    assert float(dice_loss(uniform, target, smooth=0.0)) == pytest.approx(expected, rel=1e-6)


def test_dice_averages_only_present_classes():
    target = torch.zeros(1, 4, 4, dtype=torch.int64)
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 0] = 20.0
    assert float(dice_loss(logits, target)) < 1e-3


def test_boundary_weight_matches_manual_weighting():
    mask = np.zeros((24, 24), np.int64)
    mask[4:12, 4:11] = 1
    mask[4:12, 13:20] = 1
    mask[20:, :] = IGNORE
    target = torch.from_numpy(mask)[None]
    logits = _logits_towards(target, 2, 0.3)
    w = torch.from_numpy(unet_weight_map(mask, w0=8.0, sigma=3.0, class_weights=[1.0, 2.0]))
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[0]
    expected = (per_pixel * w).sum() / w.sum()
    loss_fn = build_loss("ce", class_weights=[1.0, 2.0], boundary_weight=8.0, sigma=3.0)
    assert torch.allclose(loss_fn(logits, target), expected, rtol=1e-5)
    # A precomputed map passed by a data loader gives the same value.
    assert torch.allclose(loss_fn(logits, target, weight_map=w[None]), expected, rtol=1e-5)
    plain = build_loss("ce", class_weights=[1.0, 2.0])(logits, target)
    assert abs(float(plain) - float(expected)) > 1e-4


def test_half_precision_logits_and_backward():
    target = _target()
    logits = _logits_towards(target, 3, 1.0).half().requires_grad_()
    loss = build_loss("ce+dice", boundary_weight=5.0)(logits, target)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(logits.grad.float()).all()


def test_bad_parameters_are_refused():
    with pytest.raises(InvalidParameterError, match="'ce\\+dice'"):
        build_loss("focal")
    with pytest.raises(ValueError):
        build_loss("ce", boundary_weight=-1.0)
    with pytest.raises(InvalidParameterError, match="class weights"):
        build_loss("ce", class_weights=[1.0, 2.0])(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(InvalidParameterError):
        build_loss("ce")(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(InvalidParameterError):
        unet_weight_map(np.zeros((2, 2, 2)))
    with pytest.raises(InvalidParameterError, match="one number per class"):
        build_loss("ce", class_weights="auto")
    with pytest.raises(InvalidParameterError, match=">= 0"):
        build_loss("ce", class_weights=[1.0, -1.0])


# --- the weight map -------------------------------------------------------------------------


def _two_squares(gap: int = 2) -> np.ndarray:
    mask = np.zeros((64, 96), np.uint8)
    mask[20:40, 20:40] = 1
    mask[20:40, 40 + gap : 60 + gap] = 1
    return mask


def test_weight_map_is_largest_in_the_gap_between_touching_objects():
    mask = _two_squares(gap=2)
    w = unet_weight_map(mask, w0=10.0, sigma=5.0)
    gap = w[20:40, 40:42]
    elsewhere = w.copy()
    elsewhere[20:40, 40:42] = 0
    assert gap.min() > elsewhere.max()
    # In the gap (columns 40, 41): d1 = 1, d2 = 2 -> 1 + 10 exp(-9 / 50).
    assert w[30, 40] == pytest.approx(1 + 10 * np.exp(-9 / 50), rel=1e-5)
    assert w[0, 0] == pytest.approx(1.0, abs=1e-3)  # far background ~ w_c
    assert np.all(w[mask == 1] == 1.0)  # objects keep their class weight


def test_isolated_object_gets_only_class_weights():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    w = unet_weight_map(mask, w0=10.0, class_weights=[0.5, 3.0])
    assert np.array_equal(w, np.where(mask == 1, 3.0, 0.5).astype(np.float32))


def test_weight_map_at_least_class_weight_and_zero_on_nodata():
    rng = np.random.default_rng(3)
    mask = (rng.random((64, 64)) < 0.08).astype(np.uint8) * rng.integers(1, 3, (64, 64))
    mask = ndimage.grey_dilation(mask, size=3).astype(np.uint8)
    mask[:5] = IGNORE
    cw = np.array([0.7, 1.5, 2.5])
    w = unet_weight_map(mask, class_weights=cw)
    wc = np.where(mask == IGNORE, 0.0, cw[np.where(mask == IGNORE, 0, mask)])
    assert w.dtype == np.float32 and w.shape == mask.shape
    assert np.all(w >= wc - 1e-6)
    assert np.all(w[:5] == 0.0)
    assert w.max() > 3.0


def _brute_force_map(mask: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """Full-image distance transform per object, no radius limit."""
    objects = (mask != 0) & (mask != IGNORE)
    labels = np.zeros(mask.shape, np.int32)
    n = 0
    for c in np.unique(mask[objects]):
        lab, k = ndimage.label(objects & (mask == c))
        labels[lab > 0] = lab[lab > 0] + n
        n += k
    dists = np.sort(
        np.stack([ndimage.distance_transform_edt(labels != i) for i in range(1, n + 1)]), axis=0
    )
    term = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return np.where(objects, 1.0, 1.0 + term) * (mask != IGNORE)


def test_weight_map_equals_brute_force():
    rng = np.random.default_rng(7)
    mask = np.zeros((80, 80), np.uint8)
    for _ in range(12):
        y, x = rng.integers(0, 72, 2)
        mask[y : y + rng.integers(2, 9), x : x + rng.integers(2, 9)] = rng.integers(1, 3)
    mask[70:, 70:] = IGNORE
    fast = unet_weight_map(mask, w0=10.0, sigma=5.0)
    slow = _brute_force_map(mask, 10.0, 5.0)
    assert np.abs(fast - slow).max() < 2e-3  # terms below 1e-3 are dropped


def test_foreground_selects_the_object_classes():
    mask = _two_squares(gap=2)
    mask[20:40, 42:62] = 2  # the right square is class 2
    w_all = unet_weight_map(mask)
    w_only1 = unet_weight_map(mask, foreground=[1])
    assert w_all[30, 40] > 5
    assert w_only1[30, 40] == pytest.approx(1.0)  # a single object: no border term


def test_weight_map_of_a_chip_with_30_objects_equals_brute_force():
    """A training-sized chip: 30 objects of two classes, some cut by the chip border, some
    overlapping (merged) and some 1 px apart; the radius-limited crops miss nothing."""
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 256), np.uint8)
    for _ in range(30):
        y, x = rng.integers(-8, 250, 2)
        h, w = rng.integers(5, 16, 2)
        mask[max(y, 0) : y + h, max(x, 0) : x + w] = rng.integers(1, 3)
    mask[100:110, 100:110] = 1
    mask[100:110, 111:121] = 2  # one background column between two objects
    mask[250:, :40] = IGNORE
    fast = unet_weight_map(mask)  # defaults: w0 = 10, sigma = 5
    slow = _brute_force_map(mask, 10.0, 5.0)
    assert np.abs(fast - slow).max() < 2e-3  # terms below 1e-3 are dropped
    assert slow[105, 110] > 9.0 and (slow > 2.0).sum() > 500  # the border term is exercised
