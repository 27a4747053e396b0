"""Joint image/mask augmentation: the 8 flips and 90° rotations of a square chip.

Aerial and satellite imagery has no "up", so every element of the dihedral group D4 (4
rotations, each optionally mirrored) is an equally plausible view. The same transform is
applied to the image ``(C, H, W)`` and to its mask ``(H, W)``, so they stay aligned.

Example:
    >>> import torch
    >>> img, mask = torch.arange(4.0).reshape(1, 2, 2), torch.arange(4).reshape(2, 2)
    >>> a, b = dihedral(img, mask, 1)
    >>> bool((a[0] == b.float()).all())
    True
"""

from __future__ import annotations

import torch

__all__ = ["dihedral", "random_dihedral"]


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
