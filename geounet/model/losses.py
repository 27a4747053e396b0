"""Segmentation losses: cross-entropy, soft Dice, Lovász-Softmax, class weights, weight maps.

Every loss takes raw logits ``[B, K, H, W]`` and an ``int64`` target ``[B, H, W]`` whose
pixels equal to ``ignore_index`` (255, nodata) contribute nothing.

Example:
    >>> import torch
    >>> from geounet.model.losses import build_loss
    >>> loss_fn = build_loss("ce+dice", class_weights=[0.5, 2.0])
    >>> logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    >>> target = torch.ones(1, 4, 4, dtype=torch.int64)
    >>> loss = loss_fn(logits, target)
    >>> loss.backward()
    >>> float(loss.detach()) > 0
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage
from torch import nn

from geounet.core.errors import InvalidParameterError
from geounet.core.types import IGNORE_INDEX, check_choice

__all__ = [
    "LOSS_NAMES",
    "SegmentationLoss",
    "build_loss",
    "dice_loss",
    "lovasz_softmax_loss",
    "unet_weight_map",
]

#: Names accepted by :func:`build_loss`.
LOSS_NAMES: tuple[str, ...] = ("ce", "dice", "ce+dice", "lovasz", "ce+lovasz")

#: The border term below this value is treated as zero (sets the search radius of the map).
_WEIGHT_TOLERANCE = 1e-3

ClassWeights = Sequence[float] | Mapping[int, float] | np.ndarray | torch.Tensor


def build_loss(
    name: str = "ce+dice",
    class_weights: ClassWeights | None = None,
    boundary_weight: float = 0.0,
    sigma: float = 5.0,
    ignore_index: int = IGNORE_INDEX,
) -> nn.Module:
    """Build the training loss.

    Args:
        name: ``"ce"`` (cross-entropy), ``"dice"`` (soft Dice), ``"lovasz"`` (Lovász-Softmax,
            a surrogate of the intersection over union; :func:`lovasz_softmax_loss`), or the
            sums ``"ce+dice"`` and ``"ce+lovasz"``.
        class_weights: One weight per class, in class-index order (cross-entropy only).
        boundary_weight: ``w0`` of the U-Net paper's weight map; ``> 0`` weighs background
            pixels in narrow gaps between objects more (see :func:`unet_weight_map`).
        sigma: ``σ`` of the weight map, in pixels.
        ignore_index: Target value that marks pixels without a label.

    Returns:
        A module called as ``loss(logits, target)`` returning a scalar tensor.

    Raises:
        InvalidParameterError: If ``name`` is unknown or a parameter is out of range.

    Example:
        >>> loss_fn = build_loss("ce", boundary_weight=10.0)
        >>> type(loss_fn).__name__
        'SegmentationLoss'
    """
    check_choice("loss", name, LOSS_NAMES)
    return SegmentationLoss(
        name,
        class_weights=class_weights,
        boundary_weight=boundary_weight,
        sigma=sigma,
        ignore_index=ignore_index,
    )


class SegmentationLoss(nn.Module):
    """Cross-entropy, soft Dice and/or Lovász-Softmax with class weights, nodata, the weight map.

    With ``boundary_weight > 0`` the per-pixel cross-entropy is multiplied by
    :func:`unet_weight_map` of each target (computed on the CPU, class weights included) and
    normalised by the sum of the weights, so that it reduces to the class-weighted
    cross-entropy of PyTorch when the border term vanishes. A data loader may precompute the
    maps and pass them as ``weight_map``.

    Example:
        >>> import torch
        >>> loss_fn = SegmentationLoss("dice")
        >>> target = torch.zeros(2, 8, 8, dtype=torch.int64)
        >>> good = torch.stack([torch.full((2, 8, 8), 5.0), torch.zeros(2, 8, 8)], 1)
        >>> float(loss_fn(good, target)) < 0.01
        True
    """

    def __init__(
        self,
        name: str = "ce+dice",
        class_weights: ClassWeights | None = None,
        boundary_weight: float = 0.0,
        sigma: float = 5.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.name = check_choice("loss", name, LOSS_NAMES)
        self._terms = frozenset(self.name.split("+"))
        if boundary_weight < 0 or sigma <= 0:
            raise InvalidParameterError(
                f"boundary_weight={boundary_weight} must be >= 0 and sigma={sigma} > 0."
            )
        self.boundary_weight = float(boundary_weight)
        self.sigma = float(sigma)
        self.ignore_index = int(ignore_index)
        weights = None if class_weights is None else _weights_tensor(class_weights)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``logits [B, K, H, W]`` against ``target [B, H, W]`` (a scalar tensor)."""
        if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise InvalidParameterError(
                f"expected logits [B, K, H, W] and target [B, H, W]; got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}."
            )
        logits = logits.float()
        target = target.long()
        total = logits.new_zeros(())
        if "ce" in self._terms:
            total = total + self._cross_entropy(logits, target, weight_map)
        if "dice" in self._terms:
            total = total + dice_loss(logits, target, ignore_index=self.ignore_index)
        if "lovasz" in self._terms:
            total = total + lovasz_softmax_loss(logits, target, ignore_index=self.ignore_index)
        return total

    def _cross_entropy(
        self, logits: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor | None
    ) -> torch.Tensor:
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0
        weights = self._class_weights_for(logits)
        if weight_map is None and self.boundary_weight == 0.0:
            return F.cross_entropy(logits, target, weight=weights, ignore_index=self.ignore_index)
        if weight_map is None:
            weight_map = self._weight_maps(target, weights)
        weight_map = weight_map.to(logits.device, torch.float32) * valid
        per_pixel = F.cross_entropy(
            logits, target, ignore_index=self.ignore_index, reduction="none"
        )
        return (per_pixel * weight_map).sum() / weight_map.sum().clamp_min(1e-12)

    def _class_weights_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        w = self.class_weights
        if w is None:
            return None
        if w.numel() != logits.shape[1]:
            raise InvalidParameterError(
                f"{w.numel()} class weights given for a model with {logits.shape[1]} classes."
            )
        return w.to(logits.device, torch.float32)

    def _weight_maps(self, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        cw = None if weights is None else weights.detach().cpu().numpy()
        maps = [
            unet_weight_map(
                t,
                w0=self.boundary_weight,
                sigma=self.sigma,
                class_weights=cw,
                ignore_index=self.ignore_index,
            )
            for t in target.detach().cpu().numpy()
        ]
        return torch.from_numpy(np.stack(maps))


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Multi-class soft Dice loss: ``1 -`` the mean Dice over the classes present in ``target``.

    Sums run over the whole batch; pixels equal to ``ignore_index`` are left out of both the
    probabilities and the target.

    Args:
        logits: ``[B, K, H, W]`` raw scores.
        target: ``[B, H, W]`` class indices.
        ignore_index: Target value that marks pixels without a label.
        smooth: Added to numerator and denominator of each class's Dice.

    Returns:
        A scalar tensor in ``[0, 1]``.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 2, 2)
        >>> round(float(dice_loss(logits, torch.zeros(1, 2, 2, dtype=torch.int64))), 2)
        0.29
    """
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    probs = torch.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
    labels = torch.where(valid, target, 0).unsqueeze(1)
    onehot = torch.zeros_like(probs).scatter_(1, labels, 1.0) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    present = onehot.sum(dims) > 0
    return 1.0 - dice[present].mean()


def lovasz_softmax_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Lovász-Softmax loss: a convex surrogate of ``1 -`` IoU, averaged over the present classes.

    Berman, Rannen Triki and Blaschko (CVPR 2018): for each class present in ``target``, the
    pixel errors ``|[y = c] - p_c|`` of the whole batch are sorted in decreasing order and
    weighted by the gradient of the Jaccard loss's Lovász extension, so the loss is a tight,
    piecewise-linear surrogate of that class's IoU over the batch. Pixels equal to
    ``ignore_index`` are left out.

    Args:
        logits: ``[B, K, H, W]`` raw scores.
        target: ``[B, H, W]`` class indices.
        ignore_index: Target value that marks pixels without a label.

    Returns:
        A scalar tensor in ``[0, 1]``: 0 when every pixel's class has probability 1.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[0, 1], [1, 1]]])
        >>> perfect = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 20
        >>> round(float(lovasz_softmax_loss(perfect, target)), 4)
        0.0
        >>> round(float(lovasz_softmax_loss(-perfect, target)), 2)  # every pixel wrong
        1.0
    """
    valid = (target != ignore_index).flatten()
    if not bool(valid.any()):
        return logits.sum() * 0.0
    k = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, k)[valid]
    labels = target.flatten()[valid]
    losses = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_gradient(fg[order])))
    return torch.stack(losses).mean()


def _lovasz_gradient(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at the sorted errors (Alg. 1)."""
    gts = fg_sorted.sum()
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def unet_weight_map(
    mask: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    foreground: Iterable[int] | None = None,
    class_weights: ClassWeights | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """The U-Net paper's weight map, which makes gaps between touching objects count more.

    ``w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))`` on background pixels, where ``d1``
    and ``d2`` are the distances to the nearest and second-nearest object (a 4-connected
    component of one foreground class). Object pixels get ``w_c(x)``; pixels equal to
    ``ignore_index`` get 0. Distances are computed per object on a crop around it, limited to
    the radius beyond which the border term is below 1e-3, so the cost grows with the number
    and size of objects, not with the square of the image.

    Args:
        mask: ``(H, W)`` class indices.
        w0: Weight of the border term.
        sigma: Width of the border term in pixels.
        foreground: Classes whose components are objects; default every class but 0 and
            ``ignore_index``.
        class_weights: ``w_c`` per class (a sequence indexed by class, or a mapping); default 1.
        ignore_index: Mask value that marks pixels without a label.

    Returns:
        A ``float32`` ``(H, W)`` array, ``>= w_c`` everywhere.

    Example:
        >>> import numpy as np
        >>> mask = np.zeros((20, 30), np.uint8)
        >>> mask[5:15, 5:14] = 1; mask[5:15, 16:25] = 1   # two buildings 2 px apart
        >>> w = unet_weight_map(mask)
        >>> bool(w[10, 15] > 9 and abs(w[0, 0] - 1.0) < 0.5)
        True
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvalidParameterError(f"mask must be 2-D (H, W); got shape {mask.shape}.")
    if w0 < 0 or sigma <= 0:
        raise InvalidParameterError(f"w0={w0} must be >= 0 and sigma={sigma} > 0.")
    valid = mask != ignore_index
    weights = _class_weight_image(mask, valid, class_weights)
    objects = _foreground_mask(mask, valid, foreground, ignore_index)
    if w0 <= _WEIGHT_TOLERANCE or not objects.any():
        return weights
    labels, n = _label_objects(mask, objects)
    if n < 2:
        return weights
    radius = sigma * math.sqrt(2.0 * math.log(w0 / _WEIGHT_TOLERANCE))
    d1, d2 = _two_nearest_distances(labels, radius)
    background = valid & ~objects
    near = background & np.isfinite(d2)
    s = d1[near] + d2[near]
    weights[near] += (w0 * np.exp(-(s * s) / (2.0 * sigma * sigma))).astype(np.float32)
    return weights


def _weights_tensor(class_weights: ClassWeights) -> torch.Tensor:
    if isinstance(class_weights, str):
        raise InvalidParameterError(
            f"class_weights={class_weights!r}: give one number per class here "
            "('auto' is resolved by UnetClassifier from the data)."
        )
    if isinstance(class_weights, Mapping):
        n = max(int(k) for k in class_weights) + 1
        values = [float(class_weights.get(i, 1.0)) for i in range(n)]
    elif isinstance(class_weights, torch.Tensor):
        values = class_weights.detach().cpu().double().flatten().tolist()
    else:
        values = [float(v) for v in np.asarray(class_weights, dtype=float).ravel()]
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise InvalidParameterError(
            f"class_weights must be finite and >= 0, one per class; got {values}."
        )
    return torch.tensor(values, dtype=torch.float32)


def _class_weight_image(
    mask: np.ndarray, valid: np.ndarray, class_weights: ClassWeights | None
) -> np.ndarray:
    if class_weights is None:
        return valid.astype(np.float32)
    table = _weights_tensor(class_weights).numpy()
    classes = np.where(valid, mask, 0).astype(np.int64)
    if valid.any() and classes.max() >= table.size:
        raise InvalidParameterError(
            f"the mask holds class {int(classes.max())} but only {table.size} class weights "
            "were given; give one weight per class."
        )
    return np.where(valid, table[classes], 0.0).astype(np.float32)


def _foreground_mask(
    mask: np.ndarray, valid: np.ndarray, foreground: Iterable[int] | None, ignore_index: int
) -> np.ndarray:
    if foreground is None:
        return valid & (mask != 0)
    classes = [int(c) for c in foreground if int(c) != ignore_index]
    return valid & np.isin(mask, classes)


def _label_objects(mask: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 4-connected components of each foreground class with distinct ids."""
    labels = np.zeros(mask.shape, np.int32)
    total = 0
    for cls in np.unique(mask[objects]):
        lab, n = ndimage.label(objects & (mask == cls))
        labels[lab > 0] = lab[lab > 0] + total
        total += n
    return labels, total


def _two_nearest_distances(labels: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest labelled object (inf beyond ``radius``)."""
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    pad = math.ceil(radius)
    h, w = labels.shape
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        rows = slice(max(box[0].start - pad, 0), min(box[0].stop + pad, h))
        cols = slice(max(box[1].start - pad, 0), min(box[1].stop + pad, w))
        dist = ndimage.distance_transform_edt(labels[rows, cols] != k).astype(np.float32)
        dist[dist > radius] = np.inf
        a, b = d1[rows, cols], d2[rows, cols]
        np.minimum(b, np.maximum(a, dist), out=b)
        np.minimum(a, dist, out=a)
    return d1, d2
