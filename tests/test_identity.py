"""The dlib ResNet face recogniser port (facelab/nets/identity.py) and its converter; dlib not needed.

Real faces: ``tests/data/chip150_grace_hopper.png`` (matplotlib's ``grace_hopper.jpg``, US Navy
photograph, public domain) and ``tests/data/chip150_astronaut.png`` (scikit-image's
``data.astronaut()``, Eileen Collins, NASA, public domain), aligned by dlib exactly as its face
recogniser expects (``bench/identity_parity.py --write-chips``). Parity with dlib itself lives in
that benchmark; here: loading, shapes, invariants, gradients, errors, and the file parser.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facelab import hub
from facelab.imaging import to_tensor
from facelab.hub import load_identity
from facelab.nets.identity import DLIB_SAME_PERSON_DISTANCE, IDENTITY_FORMAT, DlibResNet, add_zero_padded
from facelab.train.convert_dlib import DlibFormatError, DlibReader, convert, dlib_to_state_dict, parse_dlib_net

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def net():
    return load_identity("dlib", device="cpu")


@pytest.fixture(scope="module")
def chips():
    """Grace Hopper and Eileen Collins, aligned 150 px chips: [2, 3, 150, 150] in [-1, 1]."""
    return torch.cat([to_tensor(DATA / "chip150_grace_hopper.png"), to_tensor(DATA / "chip150_astronaut.png")])


def test_shipped_weights_are_registered_and_load_offline(net):
    spec = hub.REGISTRY["dlib_resnet"]
    assert spec.kind == "identity" and spec.url is None and spec.card == "dlib_resnet.md"
    path = hub.weights_path("dlib_resnet")  # verifies the sha256 recorded in manifest.json
    assert hub.sha256_file(path) == spec.sha256
    assert (hub.PACKAGE_WEIGHTS / spec.card).is_file()
    ckpt = hub.load_file(path)
    assert ckpt["format"] == IDENTITY_FORMAT
    assert "CC0" in net.meta["licence"] and len(net.meta["dat_sha256"]) == 64
    assert isinstance(net, DlibResNet) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())  # stored float16, run float32


def test_descriptors_are_128d_unit_vectors(net, chips):
    with torch.no_grad():
        emb, raw = net(chips), net.descriptor(chips)
    assert emb.shape == raw.shape == (2, 128)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(emb, F.normalize(raw, dim=1))
    assert ((raw.norm(dim=1) > 1.2) & (raw.norm(dim=1) < 1.7)).all()  # dlib's raw descriptors: norm ~1.4


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate by (dx, dy) pixels, replicating the border."""
    return F.pad(x, (2, 2, 2, 2), mode="replicate")[..., 2 + dy:x.shape[2] + 2 + dy, 2 + dx:x.shape[3] + 2 + dx]


def test_same_face_perturbed_stays_closer_than_two_people(net, chips):
    perturbed = (shift(chips, 2, -1) * 1.1 + 0.05).clamp(-1, 1)  # 2 px shift, brighter, more contrast
    with torch.no_grad():
        a, b = net.descriptor(chips), net.descriptor(perturbed)
    same = (a - b).norm(dim=1)  # [2]: each person vs their own perturbed chip
    different = (a[0] - a[1]).norm()  # Grace Hopper vs Eileen Collins
    assert (same < 0.25).all() and different > DLIB_SAME_PERSON_DISTANCE
    assert different > 3 * same.max()
    cos_same = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1)
    cos_diff = F.normalize(a, dim=1)[0] @ F.normalize(a, dim=1)[1]
    assert (cos_same > 0.98).all() and cos_diff < 0.95


def test_gradients_reach_the_input(net, chips):
    x = chips[:1].clone().requires_grad_(True)
    target = net(chips[1:]).detach()
    loss = 1 - (net(x) * target).sum()  # an identity loss: pull Grace Hopper towards Eileen Collins
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.5
    with torch.no_grad():  # a small step against the gradient lowers the loss
        stepped = 1 - (net(x - 0.5 * x.grad / x.grad.abs().max()) * target).sum()
    assert stepped < loss


def test_wrong_input_size_is_a_one_line_error(net):
    with pytest.raises(ValueError, match=r"\[N, 3, 150, 150\]") as info:
        net(torch.zeros(1, 3, 64, 64))
    assert "\n" not in str(info.value) and "[1, 3, 64, 64]" in str(info.value)
    with pytest.raises(ValueError, match="150"):
        net(torch.zeros(3, 150, 150))


def test_add_zero_padded_matches_dlib_add_prev():
    """dlib adds a smaller tensor into the top-left corner (and the first channels) of a larger one."""
    small = torch.ones(1, 2, 1, 1)
    big = torch.arange(3 * 2 * 2, dtype=torch.float32).reshape(1, 3, 2, 2)
    out = add_zero_padded(small, big)
    expected = big.clone()
    expected[0, :2, 0, 0] += 1
    assert torch.equal(out, expected) and torch.equal(add_zero_padded(big, small), expected)


def test_unknown_names_and_wrong_files(tmp_path):
    with pytest.raises(KeyError, match="dlib"):
        load_identity("arcface")
    path = tmp_path / "not_identity.pt"
    torch.save({"format": "facelab.generator/1", "state_dict": {}}, path)
    with pytest.raises(ValueError, match="convert_dlib"):
        load_identity(path)


def test_facenet_needs_a_locally_cached_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as info:
        load_identity("facenet")
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "torch" / "checkpoints") in msg and "online" in msg


# --- the .dat parser, on a small file written here in dlib's format --------------------------------

def d_int(v: int) -> bytes:
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def d_float(v: float) -> bytes:
    m, e = math.frexp(v)
    return d_int(int(m * 2**53)) + d_int(e - 53)


def d_str(s: str) -> bytes:
    return d_int(len(s)) + s.encode()


def d_tensor(a: np.ndarray) -> bytes:
    shape = (a.shape + (1, 1, 1, 1))[:4]
    return d_int(2) + b"".join(d_int(n) for n in shape) + np.asarray(a, "<f4").tobytes()


def d_alias(*shape: int) -> bytes:
    return d_int(1) + b"".join(d_int(n) for n in (shape + (1, 1, 1, 1))[:4])


def to_dlib_bytes(state: dict[str, torch.Tensor], net: DlibResNet) -> bytes:
    """Serialise DlibResNet weights the way dlib stores ``anet_type`` (con_4 / affine_ / fc_2 era)."""
    mults = d_float(1.0) * 4
    tail = b"00" + b"0" + d_tensor(np.zeros(0)) * 2  # flags, x_grad, cached_output

    def con(prefix, conv):
        w, b = state[f"{prefix}.weight"].numpy(), state[f"{prefix}.bias"].numpy()
        return (d_str("con_4") + d_tensor(np.concatenate([w.ravel(), b])) + d_int(conv.out_channels)
                + b"".join(d_int(k) for k in conv.kernel_size + conv.stride + conv.padding)
                + d_alias(*w.shape) + d_alias(1, len(b)) + mults)

    def affine(prefix):
        g, b = state[f"{prefix}.weight"].numpy(), state[f"{prefix}.bias"].numpy()
        return (d_str("affine_") + d_tensor(np.concatenate([g, b])) + d_alias(1, len(g)) + d_alias(1, len(b))
                + d_int(0))  # CONV_MODE

    def pool(kind, k, s):
        return d_str(kind) + b"".join(d_int(v) for v in (k, k, s, s, 0, 0))

    layers = [affine("affine"), d_str("relu_"), pool("max_pool_2", 3, 2)]  # after the innermost con
    for i, unit in enumerate(net.units):
        p = f"units.{i}"
        layers += [None, con(f"{p}.conv1", unit.conv1), affine(f"{p}.affine1"), d_str("relu_"),
                   con(f"{p}.conv2", unit.conv2), affine(f"{p}.affine2")]
        layers += [None, None, pool("avg_pool_2", 2, 2)] if unit.downsample else []
        layers += [d_str("add_prev_"), d_str("relu_")]
    fc = state["fc.weight"].numpy()  # [128, 256]; dlib stores W [256, 128]
    layers += [pool("avg_pool_2", 0, 1),
               d_str("fc_2") + d_int(128) + d_int(256) + d_tensor(fc.T.ravel()) + d_alias(256, 128)
               + d_alias(1, 128) + d_int(1) + mults]
    versions = b"".join(d_int(1 if layer is None else 2) for layer in reversed(layers))
    mean = state["input_mean"].tolist()
    innermost = (d_int(2) + d_str("input_rgb_image_sized") + b"".join(d_float(m) for m in mean)
                 + d_int(150) + d_int(150) + con("conv", net.conv) + tail + d_tensor(np.zeros(0)))
    details = b"".join(layer + tail + d_tensor(np.zeros(0)) for layer in layers if layer is not None)
    loss = d_int(1) + d_str("loss_metric_2") + d_float(0.04) + d_float(0.6)
    return loss + versions + innermost + details


def test_reader_primitives():
    r = DlibReader(d_int(0) + d_int(-300) + d_int(2**40) + d_float(0.6) + d_float(-1.5) + d_str("con_4") + b"1")
    assert (r.int(), r.int(), r.int()) == (0, -300, 2**40)
    assert (r.float(), r.float()) == (0.6, -1.5)
    assert r.string() == "con_4" and r.bool() is True and r.pos == len(r.data)
    assert DlibReader(bytes.fromhex("030ad7a3811c")).float() == pytest.approx(0.04)  # the .dat's margin
    with pytest.raises(DlibFormatError, match="control byte"):
        DlibReader(b"\x00").int()


def test_parser_recovers_weights_and_checks_the_architecture():
    torch.manual_seed(0)
    ref = DlibResNet()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    loss, layers = parse_dlib_net(to_dlib_bytes(state, ref))
    assert loss["margin"] == pytest.approx(0.04) and loss["distance_threshold"] == pytest.approx(0.6)
    got = dlib_to_state_dict(layers)
    assert set(got) == set(state)
    for k in state:
        torch.testing.assert_close(got[k], state[k], rtol=0, atol=0 if k != "input_mean" else 1e-6)
    layers[4]["kernel"] = (2, 2)  # the stem's max pool changed: not dlib's face recognition network
    with pytest.raises(DlibFormatError, match="max_pool"):
        dlib_to_state_dict(layers)


def test_convert_writes_reproducible_loadable_files(tmp_path):
    """convert() saves with hub.atomic_torch_save: the same .dat gives the same sha256 under any name."""
    torch.manual_seed(0)
    ref = DlibResNet()
    dat = tmp_path / "model.dat"
    dat.write_bytes(to_dlib_bytes({k: v.detach().clone() for k, v in ref.state_dict().items()}, ref))
    a, b = convert(dat, tmp_path / "a.pt"), convert(dat, tmp_path / "out" / "b.pt")
    assert hub.sha256_file(a) == hub.sha256_file(b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "model.dat", "out"]
    assert load_identity(a, device="cpu").meta["dat_file"] == "model.dat"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu(net, chips):
    gpu = load_identity("dlib", device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(gpu(chips.cuda()).cpu(), net(chips), atol=1e-4, rtol=0)
