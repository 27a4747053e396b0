"""Joint image/mask augmentation for aerial and satellite chips.

Aerial and satellite imagery has no "up", so every element of the dihedral group D4 (4
rotations, each optionally mirrored) is an equally plausible view. :func:`augment_chip` adds
what changes between flights and sensors: a small scale jitter (ground sampling distance),
and per-band brightness, contrast and gamma (sun, haze, sensor response). It works on the
*normalised* chip (``(x - mean) / std`` per band), so 8-bit, 16-bit and float imagery are
treated alike. The same geometry is applied to the image ``(C, H, W)``, its mask ``(H, W)``
and its validity, so they stay aligned; nodata stays nodata (0 in the image, 255 in the
mask), and the border a zoom-out uncovers is nodata too.

Example:
    >>> import torch
    >>> img, mask = torch.arange(4.0).reshape(1, 2, 2), torch.arange(4).reshape(2, 2)
    >>> a, b = dihedral(img, mask, 1)
    >>> bool((a[0] == b.float()).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from geounet.core.errors import InvalidParameterError
from geounet.core.types import IGNORE_INDEX

__all__ = [
    "CUTMIX_SIDE",
    "AugmentOptions",
    "augment_chip",
    "augment_from_text",
    "augment_options",
    "cut_mix",
    "dihedral",
    "random_dihedral",
    "rotate_and_zoom",
]

#: Range of a pasted box's side, as a fraction of the chip's side (drawn per axis).
CUTMIX_SIDE = (0.25, 0.75)


@dataclass(frozen=True)
class AugmentOptions:
    """What :func:`augment_chip` draws for each training chip (the defaults are the recipe).

    Attributes:
        dihedral: One of the 8 flips / quarter turns.
        scale: Range of the zoom factor, drawn log-uniformly (``(1, 1)``: off). A zoom-in
            is cropped back to the chip at a random place; a zoom-out is padded with nodata.
        brightness: Largest per-band shift, in standard deviations of the band.
        contrast: Largest per-band relative change of the spread around the chip's mean.
        gamma: Largest per-band change of the gamma exponent (drawn log-uniformly in
            ``[1 / (1 + gamma), 1 + gamma]``), applied to the chip's band range.
        p_photometric: Probability that a chip gets brightness/contrast/gamma at all.
        grayscale: Probability that a chip of two or more bands loses its colour: every band
            is replaced by the mean of its normalised bands (before the brightness, contrast
            and gamma, which may tint it again). 0 (default): off.
        cutmix: Probability that a chip gets a box of another training chip (augmented on
            its own) pasted over it, image and mask alike (:func:`cut_mix`): roofs, roads and
            fields meet in places the labelled part never shows. 0 (default): off.
        recolor: Probability that the labelled objects of a chip change colour on their own:
            the pixels of each class but the first (background) are shifted per band by
            their own draw in ``±RECOLOR_SIGMA`` standard deviations, the ground keeps its
            colour. A labelled part that shows grey metal roofs then also shows dark,
            rusty or red ones, as the rest of a scene may. 0 (default): off, and no number
            is drawn for it.
        rotate: Largest rotation in degrees, drawn uniformly in ``[-rotate, rotate]`` and
            resampled together with the zoom (:func:`rotate_and_zoom`): with the dihedral
            quarter turns, 45 gives every orientation. The corners a turn uncovers are
            nodata. 0 (default): off, and no number is drawn for it.

    The photometric defaults are strong enough to tint a chip (each band shifted by up to
    0.4 of its standard deviation, independently): a labelled part of a scene rarely shows
    every roof colour of the rest. On ``oam_zanzibar`` (grey metal roofs in the labelled two
    thirds, red tiles in the mapped third) they raised object F1 from 0.441 / 0.448 to
    0.500 / 0.549 and building IoU from 0.459 / 0.650 to 0.598 / 0.693 (``fit(seed=1)`` /
    ``seed=2``) over the earlier ±0.1 σ, ±10 %, gamma ±15 % on 80 % of chips. The cost: Inria
    Austin (one lighting throughout) building IoU -0.042 / -0.006 (F1 +0.010 / -0.005);
    Kampala F1 -0.001 / +0.025; Atlanta (panchromatic) F1 0.286 -> 0.476 / 0.300 -> 0.381,
    IoU 0.377 -> 0.349 / 0.316 -> 0.337 (``benchmarks/README.md``, seventh and eighth
    rounds). Grey-scale (``grayscale=0.25``) did not help Zanzibar (F1 equal with one seed,
    -0.058 with another). CutMix on half the chips (``cutmix=0.5``): Zanzibar object F1 0.490
    -> 0.566 and 0.593 -> 0.531, building IoU 0.325 -> 0.575 and 0.698 -> 0.551 (seeds 1, 2);
    Inria F1 0.507 -> 0.468, IoU 0.530 -> 0.438 (fifteenth round): off by default. Any-angle
    rotation (``rotate=45``), five runs beside the defaults: object F1 -0.006 on average (2 up,
    3 down), building IoU +0.019 (twentieth round): off by default. Object recolouring
    (``recolor=0.5``) beside the defaults on the same machine: Zanzibar object F1 0.583 ->
    0.553 and 0.604 -> 0.615, building IoU 0.667 -> 0.668 and 0.702 -> 0.623 (seeds 1, 2; its
    rusty roofs still missed), Inria 0.561 -> 0.500, IoU 0.544 -> 0.550 (seed 1;
    twenty-sixth round): off by default.
    """

    dihedral: bool = True
    scale: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.4
    contrast: float = 0.2
    gamma: float = 0.3
    p_photometric: float = 0.9
    grayscale: float = 0.0
    cutmix: float = 0.0
    rotate: float = 0.0
    recolor: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0.5 <= lo <= 1.0 <= hi <= 2.0:
            raise InvalidParameterError(
                f"AugmentOptions.scale={self.scale} must satisfy 0.5 <= low <= 1 <= high <= 2."
            )
        for name in (
            "brightness",
            "contrast",
            "gamma",
            "p_photometric",
            "grayscale",
            "cutmix",
            "recolor",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidParameterError(f"AugmentOptions.{name}={v} must lie in [0, 1].")
        if not 0.0 <= self.rotate <= 180.0:
            raise InvalidParameterError(
                f"AugmentOptions.rotate={self.rotate} must lie in [0, 180] degrees (45 with the "
                "dihedral quarter turns gives every orientation; 0 is off)."
            )


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _photometric(
    image: torch.Tensor, valid: torch.Tensor, opt: AugmentOptions, gen: torch.Generator | None
) -> torch.Tensor:
    """Per-band gamma (on the chip's band range), contrast and brightness of valid pixels."""
    c = image.shape[0]
    if not valid.any():
        return image
    dense = bool(valid.all())  # the common case: a view, no gather and no scatter
    px = image.reshape(c, -1) if dense else image[:, valid]  # (C, n) valid values
    lo, hi = px.min(1).values, px.max(1).values
    span = torch.clamp(hi - lo, min=1e-6)
    g = torch.exp(_uniform(-math.log1p(opt.gamma), math.log1p(opt.gamma), c, gen))
    u = ((px - lo[:, None]) / span[:, None]).clamp(0, 1)
    px = lo[:, None] + u ** g[:, None] * span[:, None]
    mean = px.mean(1, keepdim=True)
    px = mean + (px - mean) * _uniform(1 - opt.contrast, 1 + opt.contrast, c, gen)[:, None]
    px = px + _uniform(-opt.brightness, opt.brightness, c, gen)[:, None]
    if dense:
        return px.to(image.dtype).reshape(image.shape)
    out = image.clone()
    out[:, valid] = px.to(image.dtype)
    return out


#: Largest per-band shift (standard deviations) of a recoloured object (``recolor``).
RECOLOR_SIGMA = 1.0


def _recolor(
    image: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, gen: torch.Generator | None
) -> torch.Tensor:
    """Each labelled class but the first shifted per band by its own draw (``recolor``)."""
    out = image.clone()
    for k in torch.unique(mask[valid]).tolist():
        if k in (0, IGNORE_INDEX):
            continue
        shift = _uniform(-RECOLOR_SIGMA, RECOLOR_SIGMA, image.shape[0], gen)
        sel = (mask == k) & valid
        out[:, sel] = out[:, sel] + shift[:, None].to(image.dtype)
    return out


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    """Every band replaced by the mean of the chip's normalised bands (its colour removed)."""
    if image.shape[0] < 2:
        return image
    return image.mean(0, keepdim=True).expand_as(image).clone()


def augment_options(value: object, source: str = "augment") -> AugmentOptions | None:
    """The augmentation a ``prepare_data(augment=...)`` value asks for (None: off).

    Args:
        value: True (the default :class:`AugmentOptions`), False or None (no augmentation), an
            :class:`AugmentOptions`, or a mapping of some of its fields, e.g.
            ``{"grayscale": 0.2, "scale": (0.9, 1.1)}`` (the others keep their defaults).
        source: The argument's name, for the message of a bad value.

    Returns:
        The options, or None when augmentation is off.

    Raises:
        InvalidParameterError: Another type, an unknown field or a value out of range (the
            message lists the fields).

    Example:
        >>> augment_options({"grayscale": 0.2}).grayscale
        0.2
        >>> augment_options(False) is None
        True
    """
    if isinstance(value, AugmentOptions):
        return value
    if value is None or isinstance(value, bool):
        return AugmentOptions() if value else None
    fields = list(AugmentOptions.__dataclass_fields__)
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in fields)
        if unknown:
            raise InvalidParameterError(
                f"{source}: unknown augmentation option(s) {unknown}; the options are "
                f"{fields} (see geounet.data.augment.AugmentOptions)."
            )
        opts = dict(value)
        try:
            if "scale" in opts:
                opts["scale"] = tuple(float(v) for v in opts["scale"])
            return AugmentOptions(**opts)
        except (TypeError, ValueError) as exc:  # e.g. scale=1.1 or brightness="high"
            raise InvalidParameterError(
                f"{source}={dict(value)!r}: {exc}; scale is a (low, high) pair, the other "
                "options numbers in [0, 1] (dihedral True or False)."
            ) from exc
    raise InvalidParameterError(
        f"{source}={value!r}: expected True, False, an AugmentOptions or a mapping of its "
        f"fields {fields}; e.g. augment={{'grayscale': 0.2}}."
    )


_OFF = {"off", "none", "false", "no"}
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _field_from_text(item: str, key: str, text: str) -> object:
    """One ``KEY=VALUE`` of :func:`augment_from_text` read as its field's type."""
    try:
        if key == "scale":
            low, high = (float(v) for v in text.split(","))
            return (low, high)
        if key == "dihedral":
            return _BOOLS[text.strip().lower()]
        return float(text)
    except (ValueError, KeyError):
        kind = {"scale": "two numbers LOW,HIGH", "dihedral": "true or false"}.get(key, "a number")
        raise InvalidParameterError(
            f"--augment {item}: {key} takes {kind}, e.g. --augment scale=0.9,1.1, "
            "--augment dihedral=false or --augment rotate=45."
        ) from None


def augment_from_text(items: Sequence[str]) -> bool | dict[str, object]:
    """The ``augment=`` value that command-line ``--augment`` items ask for.

    Args:
        items: ``KEY=VALUE`` items naming fields of :class:`AugmentOptions` (``scale`` as
            ``LOW,HIGH``, ``dihedral`` as true / false, the others as numbers), or the one
            item ``off``. No item: the defaults.

    Returns:
        True (the defaults), False (off) or a mapping for :func:`augment_options`.

    Raises:
        InvalidParameterError: An item that is not ``KEY=VALUE``, an unknown field, a value
            of the wrong kind or out of range, or ``off`` beside other items.

    Example:
        >>> augment_from_text(["rotate=45", "scale=0.9,1.1"])
        {'rotate': 45.0, 'scale': (0.9, 1.1)}
        >>> augment_from_text(["off"]), augment_from_text([])
        (False, True)
    """
    if not items:
        return True
    if any(i.strip().lower() in _OFF for i in items):
        if len(items) > 1:
            raise InvalidParameterError(
                f"--augment {' '.join(items)}: 'off' turns augmentation off and takes no "
                "other item; give either --augment off or KEY=VALUE items."
            )
        return False
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in AugmentOptions.__dataclass_fields__:
            raise InvalidParameterError(
                f"--augment {item}: expected KEY=VALUE with KEY one of "
                f"{list(AugmentOptions.__dataclass_fields__)}, or 'off'; e.g. --augment rotate=45."
            )
        out[key] = _field_from_text(item, key, text)
    augment_options(out, source="--augment")  # values out of range fail here
    return out


def _scale(
    image: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    factor: float,
    gen: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zoom by ``factor`` and crop or pad back to the chip size (padding is nodata)."""
    h, w = image.shape[-2:]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    if (nh, nw) == (h, w):
        return image, mask, valid
    img = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    near = F.interpolate(
        torch.stack([mask.float(), valid.float()])[None], size=(nh, nw), mode="nearest-exact"
    )[0]
    lab, ok = near[0].to(mask.dtype), near[1] > 0.5
    if nh >= h and nw >= w:
        r = int(torch.randint(0, nh - h + 1, (1,), generator=gen))
        c = int(torch.randint(0, nw - w + 1, (1,), generator=gen))
        return img[:, r : r + h, c : c + w], lab[r : r + h, c : c + w], ok[r : r + h, c : c + w]
    r = int(torch.randint(0, h - nh + 1, (1,), generator=gen))
    c = int(torch.randint(0, w - nw + 1, (1,), generator=gen))
    out_img = image.new_zeros(image.shape)
    out_lab = torch.full_like(mask, IGNORE_INDEX)
    out_ok = torch.zeros_like(valid)
    out_img[:, r : r + nh, c : c + nw] = img
    out_lab[r : r + nh, c : c + nw] = lab
    out_ok[r : r + nh, c : c + nw] = ok
    return out_img, out_lab, out_ok


def rotate_and_zoom(
    image: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    degrees: float,
    factor: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn a chip by ``degrees`` and zoom it by ``factor`` in one resampling.

    The image is resampled bilinearly, the mask and the validity by nearest neighbour on the
    same grid, so they stay aligned. The view's centre is shifted at random as far as the
    zoom allows (as :func:`augment_chip`'s crop of a zoom-in, or its placement of a
    zoom-out); whatever the view shows beyond the chip (the corners of a turn, the border of
    a zoom-out) is nodata: invalid, its label 0 until :func:`augment_chip` marks it 255.

    Args:
        image: ``(C, H, W)`` float chip.
        mask: ``(H, W)`` integer class indices.
        valid: ``(H, W)`` bool validity of the image pixels.
        degrees: Rotation angle; its sign sets the direction.
        factor: Zoom factor (> 1 zooms in).
        generator: Random generator for the shift (default: torch's global one).

    Returns:
        The turned ``(image, mask, valid)``, same shapes and dtypes.

    Example:
        >>> img, m = torch.ones(1, 8, 8), torch.ones(8, 8, dtype=torch.int64)
        >>> _, m2, ok = rotate_and_zoom(img, m, torch.ones(8, 8, dtype=torch.bool), 45.0)
        >>> bool(ok[0, 0]), bool(ok[4, 4]), int(m2[4, 4])
        (False, True, 1)
    """
    h, w = image.shape[-2:]
    a = math.radians(degrees)
    cos, sin = math.cos(a) / factor, math.sin(a) / factor
    span = abs(1.0 / factor - 1.0)
    tx, ty = (float(v) for v in _uniform(-span, span, 2, generator))
    theta = torch.tensor([[[cos, -sin * h / w, tx], [sin * w / h, cos, ty]]])
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    img = F.grid_sample(image[None].float(), grid, "bilinear", "zeros", align_corners=False)
    near = F.grid_sample(
        torch.stack([mask.float(), valid.float()])[None], grid, "nearest", "zeros", False
    )[0]
    return img[0].to(image.dtype), near[0].to(mask.dtype), near[1] > 0.5


def augment_chip(
    image: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    options: AugmentOptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one augmentation for a normalised training chip and its mask.

    Order: scale jitter, with the rotation when ``options.rotate`` is on (image bilinear,
    mask and validity nearest), grey-scale and object recolouring when on, photometric
    changes of the valid pixels, then a dihedral transform. Invalid pixels end as 0 in
    every band (the training mean) and 255 in the mask, as
    :func:`~geounet.data.normalize.normalize_valid` and the loss expect.

    Args:
        image: ``(C, H, W)`` float chip, normalised per band.
        mask: ``(H, W)`` integer class indices, 255 = no label.
        valid: ``(H, W)`` bool validity of the image pixels (default: all valid).
        generator: Random generator (default: torch's global one).
        options: What to draw (default :class:`AugmentOptions`).

    Returns:
        The augmented ``(image, mask)``, same shapes and dtypes.

    Example:
        >>> img, mask = torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.int64)
        >>> a, b = augment_chip(img, mask, generator=torch.Generator().manual_seed(0))
        >>> tuple(a.shape), b.dtype
        ((3, 8, 8), torch.int64)
    """
    opt = options or AugmentOptions()
    if valid is None:
        valid = torch.ones(mask.shape, dtype=torch.bool)
    lo, hi = opt.scale
    factor = 1.0
    if hi > lo:
        factor = math.exp(float(_uniform(math.log(lo), math.log(hi), 1, generator)))
    if opt.rotate > 0:  # one resampling for both; no draw when off, so seeded runs repeat
        degrees = float(_uniform(-opt.rotate, opt.rotate, 1, generator))
        image, mask, valid = rotate_and_zoom(image, mask, valid, degrees, factor, generator)
    elif hi > lo:
        image, mask, valid = _scale(image, mask, valid, factor, generator)
    if opt.grayscale > 0 and float(torch.rand(1, generator=generator)) < opt.grayscale:
        image = _grayscale(image)
    if opt.recolor > 0 and float(torch.rand(1, generator=generator)) < opt.recolor:
        image = _recolor(image, mask, valid, generator)
    if float(torch.rand(1, generator=generator)) < opt.p_photometric:
        image = _photometric(image, valid, opt, generator)
    image = torch.where(valid[None], image, torch.zeros((), dtype=image.dtype))
    mask = torch.where(valid, mask, torch.full((), IGNORE_INDEX, dtype=mask.dtype))
    if opt.dihedral:
        image, mask = random_dihedral(image, mask, generator)
    return image.contiguous(), mask.contiguous()


def dihedral(image: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply dihedral transform ``k`` (0-7) to an image and its mask.

    ``k % 4`` quarter turns counter-clockwise, then a left-right mirror when ``k >= 4``.
    ``k = 0`` returns the inputs unchanged.

    Args:
        image: ``(..., H, W)`` tensor.
        mask: ``(..., H, W)`` tensor.
        k: Transform index in ``0..7``.

    Returns:
        The transformed ``(image, mask)``, contiguous.
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}.")
    if k == 0:
        return image, mask
    dims = (-2, -1)
    image, mask = torch.rot90(image, k % 4, dims), torch.rot90(mask, k % 4, dims)
    if k >= 4:
        image, mask = torch.flip(image, (-1,)), torch.flip(mask, (-1,))
    return image.contiguous(), mask.contiguous()


def random_dihedral(
    image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one of the 8 dihedral transforms, drawn uniformly, to an image and its mask.

    Args:
        image: ``(..., H, W)`` tensor (square chips keep their shape under rotation).
        mask: ``(..., H, W)`` tensor.
        generator: Random generator (default: torch's global one).

    Returns:
        The transformed ``(image, mask)``.
    """
    k = int(torch.randint(0, 8, (1,), generator=generator).item())
    return dihedral(image, mask, k)


def cut_mix(
    image: torch.Tensor,
    mask: torch.Tensor,
    other_image: torch.Tensor,
    other_mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a random box of another chip over a chip, image and mask alike (CutMix).

    The box's height and width are drawn uniformly in :data:`CUTMIX_SIDE` of the chip's, its
    place uniformly; the same pixels of ``other_image`` and ``other_mask`` replace the chip's,
    so the labels stay aligned and the other chip's nodata stays nodata.

    Args:
        image: ``(C, H, W)`` chip.
        mask: ``(H, W)`` its class indices.
        other_image: ``(C, H, W)`` the chip to take the box from.
        other_mask: ``(H, W)`` its class indices.
        generator: Random generator (default: torch's global one).

    Returns:
        The mixed ``(image, mask)`` (new tensors; the inputs are not changed).

    Example:
        >>> a, b = cut_mix(torch.zeros(1, 8, 8), torch.zeros(8, 8, dtype=torch.int64),
        ...                torch.ones(1, 8, 8), torch.ones(8, 8, dtype=torch.int64))
        >>> bool((a[0] == b.float()).all()), 0 < int(b.sum()) < 64
        (True, True)
    """
    if other_image.shape != image.shape or other_mask.shape != mask.shape:
        raise ValueError(
            f"cut_mix needs chips of one shape; got {tuple(image.shape)} and "
            f"{tuple(other_image.shape)}."
        )
    h, w = mask.shape
    lo, hi = CUTMIX_SIDE
    bh = max(1, round(h * float(_uniform(lo, hi, 1, generator))))
    bw = max(1, round(w * float(_uniform(lo, hi, 1, generator))))
    r = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
    c = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
    image, mask = image.clone(), mask.clone()
    image[:, r : r + bh, c : c + bw] = other_image[:, r : r + bh, c : c + bw]
    mask[r : r + bh, c : c + bw] = other_mask[r : r + bh, c : c + bw]
    return image, mask
