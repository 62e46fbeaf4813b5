"""Name table between NVIDIA's StyleGAN2-ADA state dicts and facelab's StyleGAN2.

Our modules and parameters are named like StyleGAN2-ADA's ``training/networks.py``, so the table
is the identity except for the ``resample_filter`` buffers: the official code stores the
[4, 4] FIR filter ``outer([1,3,3,1], [1,3,3,1]) / 64`` in every block and resampling layer; we
rebuild it as a non-persistent constant. Those keys are checked against
:func:`facelab.nets.resample.setup_filter` and dropped (and re-inserted on the way back).

Placeholders: ``{i}`` mapping layer; ``{r}`` any block resolution; ``{s}`` a resolution >= 8;
``{c}`` conv 0 or 1; ``{conv}`` one of fromrgb, conv0, conv1, skip, conv.
``C(r) = min(channel_base // r, channel_max)``; ``C_in`` is the input width of that conv
(``C(r/2)`` for conv0, else ``C(r)``); ``R`` is the image resolution.

Generator ("G", also "G_ema"):

====================================== ===================== ====================================
official key                           facelab key           shape
====================================== ===================== ====================================
mapping.fc{i}.weight                   (same)                [w_dim, z_dim if i == 0 else w_dim]
mapping.fc{i}.bias                     (same)                [w_dim]
mapping.w_avg                          (same)                [w_dim]
synthesis.b4.const                     (same)                [C(4), 4, 4]
synthesis.b{r}.conv{c}.weight          (same)                [C(r), C_in, 3, 3] (conv0: r >= 8)
synthesis.b{r}.conv{c}.bias            (same)                [C(r)]
synthesis.b{r}.conv{c}.noise_strength  (same)                []
synthesis.b{r}.conv{c}.noise_const     (same)                [r, r]
synthesis.b{r}.conv{c}.affine.weight   (same)                [C_in, w_dim]
synthesis.b{r}.conv{c}.affine.bias     (same)                [C_in]
synthesis.b{r}.torgb.weight            (same)                [img_channels, C(r), 1, 1]
synthesis.b{r}.torgb.bias              (same)                [img_channels]
synthesis.b{r}.torgb.affine.weight     (same)                [C(r), w_dim]
synthesis.b{r}.torgb.affine.bias       (same)                [C(r)]
synthesis.b{r}.resample_filter         dropped               [4, 4] == setup_filter()
synthesis.b{r}.conv{c}.resample_filter dropped               [4, 4] == setup_filter()
====================================== ===================== ====================================

Discriminator ("D", ``architecture="resnet"``, ``c_dim=0``):

====================================== ===================== ====================================
official key                           facelab key           shape
====================================== ===================== ====================================
b{r}.fromrgb.weight                    (same)                [C(R), img_channels, 1, 1] (r = R)
b{r}.fromrgb.bias                      (same)                [C(R)]
b{s}.conv0.weight                      (same)                [C(s), C(s), 3, 3]
b{s}.conv0.bias                        (same)                [C(s)]
b{s}.conv1.weight                      (same)                [C(s/2), C(s), 3, 3]
b{s}.conv1.bias                        (same)                [C(s/2)]
b{s}.skip.weight                       (same)                [C(s/2), C(s), 1, 1]
b4.conv.weight                         (same)                [C(4), C(4) + mbstd_num_channels, 3, 3]
b4.conv.bias                           (same)                [C(4)]
b4.fc.weight                           (same)                [C(4), 16 * C(4)]
b4.fc.bias                             (same)                [C(4)]
b4.out.weight                          (same)                [1, C(4)]
b4.out.bias                            (same)                [1]
b{s}.resample_filter                   dropped               [4, 4] == setup_filter()
b{r}.{conv}.resample_filter            dropped               [4, 4] == setup_filter()
====================================== ===================== ====================================

Not representable (rejected as unexpected/missing keys): conditional networks (``c_dim > 0``,
``mapping.embed.*``), ``architecture`` "orig"/"resnet" generators and "orig"/"skip"
discriminators, ``use_noise=False``. Things a state dict cannot tell (``conv_clamp``,
``mbstd_group_size``, learning-rate multipliers) must come from the pickle's ``init_kwargs``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .resample import setup_filter
from .stylegan2 import Discriminator, Generator, StyleGAN2Config

__all__ = ["RULES", "Rule", "official_to_facelab", "facelab_to_official", "config_from_official_shapes"]

_PLACEHOLDERS = {"i": r"\d+", "r": r"\d+", "s": r"8|[1-9]\d+", "c": r"[01]",
                 "conv": r"fromrgb|conv0|conv1|skip|conv"}


@dataclass(frozen=True)
class Rule:
    """One row of the table.

    ``official``/``facelab`` are key patterns whose ``{name}`` placeholders match as in
    ``_PLACEHOLDERS`` and carry over from one side to the other; ``facelab`` is None for official
    keys we drop (the filters). ``shape`` documents the expected shape.
    """

    official: str
    facelab: str | None
    shape: str

    def match(self, key: str, *, side: str) -> dict[str, str] | None:
        pattern = self.official if side == "official" else self.facelab
        return None if pattern is None else _match(pattern, key)


def _match(pattern: str, key: str) -> dict[str, str] | None:
    regex = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m[1]}>{_PLACEHOLDERS[m[1]]})", re.escape(pattern))
    m = re.fullmatch(regex, key)
    return None if m is None else m.groupdict()


_FILTER = "[4, 4] == setup_filter()"
RULES: dict[str, tuple[Rule, ...]] = {
    "G": tuple(Rule(k, k, s) for k, s in [
        ("mapping.fc{i}.weight", "[w_dim, z_dim if i == 0 else w_dim]"),
        ("mapping.fc{i}.bias", "[w_dim]"),
        ("mapping.w_avg", "[w_dim]"),
        ("synthesis.b4.const", "[C(4), 4, 4]"),
        ("synthesis.b{r}.conv{c}.weight", "[C(r), C_in, 3, 3]"),
        ("synthesis.b{r}.conv{c}.bias", "[C(r)]"),
        ("synthesis.b{r}.conv{c}.noise_strength", "[]"),
        ("synthesis.b{r}.conv{c}.noise_const", "[r, r]"),
        ("synthesis.b{r}.conv{c}.affine.weight", "[C_in, w_dim]"),
        ("synthesis.b{r}.conv{c}.affine.bias", "[C_in]"),
        ("synthesis.b{r}.torgb.weight", "[img_channels, C(r), 1, 1]"),
        ("synthesis.b{r}.torgb.bias", "[img_channels]"),
        ("synthesis.b{r}.torgb.affine.weight", "[C(r), w_dim]"),
        ("synthesis.b{r}.torgb.affine.bias", "[C(r)]"),
    ]) + (Rule("synthesis.b{r}.resample_filter", None, _FILTER),
          Rule("synthesis.b{r}.conv{c}.resample_filter", None, _FILTER)),
    "D": tuple(Rule(k, k, s) for k, s in [
        ("b{r}.fromrgb.weight", "[C(R), img_channels, 1, 1]"),
        ("b{r}.fromrgb.bias", "[C(R)]"),
        ("b{s}.conv0.weight", "[C(s), C(s), 3, 3]"),
        ("b{s}.conv0.bias", "[C(s)]"),
        ("b{s}.conv1.weight", "[C(s/2), C(s), 3, 3]"),
        ("b{s}.conv1.bias", "[C(s/2)]"),
        ("b{s}.skip.weight", "[C(s/2), C(s), 1, 1]"),
        ("b4.conv.weight", "[C(4), C(4) + mbstd_num_channels, 3, 3]"),
        ("b4.conv.bias", "[C(4)]"),
        ("b4.fc.weight", "[C(4), 16 * C(4)]"),
        ("b4.fc.bias", "[C(4)]"),
        ("b4.out.weight", "[1, C(4)]"),
        ("b4.out.bias", "[1]"),
    ]) + (Rule("b{s}.resample_filter", None, _FILTER),
          Rule("b{r}.{conv}.resample_filter", None, _FILTER)),
}


def _rules(which: str) -> tuple[Rule, ...]:
    key = "G" if which == "G_ema" else which
    if key not in RULES:
        raise ValueError(f"which must be 'G', 'G_ema' or 'D', got {which!r}")
    return RULES[key]


def _rename(key: str, which: str, *, to: str) -> tuple[Rule | None, str | None]:
    """The first rule matching ``key`` and the key on the other side (None if dropped)."""
    side = "facelab" if to == "official" else "official"
    for rule in _rules(which):
        groups = rule.match(key, side=side)
        if groups is not None:
            target = rule.official if to == "official" else rule.facelab
            return rule, None if target is None else target.format(**groups)
    return None, None


def _keys_str(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


def _describe(cfg: StyleGAN2Config) -> str:
    return (f"{cfg.img_resolution} px, z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, {cfg.mapping_layers} mapping layers, "
            f"channel_base {cfg.channel_base}, channel_max {cfg.channel_max}")


def _check_filter(key: str, value: Tensor) -> None:
    if tuple(value.shape) == (4, 4) and (value.is_meta or torch.allclose(
            value.detach().float().cpu(), setup_filter(), rtol=0.0, atol=1e-6)):
        return
    raise ValueError(f"official buffer {key} is not the [1,3,3,1] FIR filter that facelab hard-codes; "
                     "load only networks built with the default resample_filter=[1,3,3,1] "
                     "(or teach facelab.nets.resample other filters)")


def _validate(sd: Mapping[str, Tensor], which: str, cfg: StyleGAN2Config) -> None:
    """Compare keys and shapes of a facelab state dict with a facelab network built from ``cfg``."""
    with torch.device("meta"):
        net = Discriminator(cfg) if which == "D" else Generator(cfg)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{which} state dict does not fit facelab's network ({_describe(cfg)}): "
                         f"missing keys {_keys_str(missing)}, unexpected keys {_keys_str(unexpected)}")
    bad = [f"{k} {list(sd[k].shape)} != {list(s)}" for k, s in expected.items() if tuple(sd[k].shape) != s]
    if bad:
        raise ValueError(f"{which} state dict has wrong shapes for {_describe(cfg)}: {_keys_str(bad)}")


def official_to_facelab(state_dict: Mapping[str, Tensor], *, which: str = "G",
                        cfg: StyleGAN2Config | None = None) -> dict[str, Tensor]:
    """Rename an official StyleGAN2-ADA state dict (``G``, ``G_ema`` or ``D``) to facelab keys.

    ``resample_filter`` buffers are checked and dropped; tensors are not copied. ``cfg`` defaults
    to :func:`config_from_official_shapes`. Raises a one-line ValueError naming unexpected or
    missing keys, wrong shapes, or a non-default filter. Load the result with
    ``Generator(cfg).load_state_dict(out)`` (or ``Discriminator``).
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        rule, target = _rename(key, which, to="facelab")
        if rule is None:
            unknown.append(key)
        elif target is None:
            _check_filter(key, value)
        else:
            out[target] = value
    if unknown:
        raise ValueError(f"official {which} state dict has keys facelab cannot represent: "
                         f"{_keys_str(unknown)} (conditional or non-default architecture?)")
    _validate(out, which, cfg or config_from_official_shapes(state_dict, which=which))
    return out


def facelab_to_official(state_dict: Mapping[str, Tensor], *, which: str = "G",
                        cfg: StyleGAN2Config | None = None) -> dict[str, Tensor]:
    """Inverse of :func:`official_to_facelab`: rename and re-insert the ``resample_filter`` buffers.

    Each filter is a fresh ``setup_filter()`` [4, 4] float32 tensor on the device of the
    parameters next to it; it is placed before the first key of the module that owns it.
    """
    renamed: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        _, target = _rename(key, which, to="official")
        if target is None:
            unknown.append(key)
        else:
            renamed[target] = value
    if unknown:
        raise ValueError(f"facelab {which} state dict has keys with no official name: {_keys_str(unknown)}")
    _validate(state_dict, which, cfg or config_from_official_shapes(renamed, which=which))
    out: dict[str, Tensor] = {}
    for key, value in renamed.items():
        parts = key.split(".")
        for n in range(1, len(parts)):
            fkey = ".".join(parts[:n]) + ".resample_filter"
            if fkey not in out and any(r.facelab is None and r.match(fkey, side="official")
                                       for r in _rules(which)):
                out[fkey] = setup_filter(device=value.device)
        out[key] = value
    return out


def _infer_channel_base(channels: dict[int, int], channel_max: int) -> int:
    """Smallest ``channel_base`` with ``min(base // r, channel_max) == channels[r]`` for all r."""
    lo = max(c * r if c < channel_max else channel_max * r for r, c in channels.items())
    hi = min([(c + 1) * r - 1 for r, c in channels.items() if c < channel_max], default=lo)
    powers = [2 ** k for k in range(lo.bit_length() - 1, hi.bit_length() + 1) if lo <= 2 ** k <= hi]
    base = powers[0] if powers else lo
    if any(min(base // r, channel_max) != c for r, c in channels.items()):
        raise ValueError(f"channel widths {channels} do not follow min(channel_base // r, channel_max)")
    return base


def config_from_official_shapes(state_dict: Mapping[str, Tensor], *, which: str = "G",
                                **overrides) -> StyleGAN2Config:
    """Infer a StyleGAN2Config from official (or facelab) key names and tensor shapes.

    Only ``.shape`` is read, so meta tensors work. From G: img_resolution, img_channels, z_dim,
    w_dim, mapping_layers, channel_base, channel_max. From D: img_resolution, img_channels,
    channel_base, channel_max, mbstd_num_channels (z/w fields keep their defaults). Fields a
    state dict cannot show (e.g. ``conv_clamp=256`` for ADA fp16 training) go in ``overrides``.
    """
    _rules(which)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    try:
        if which == "D":
            res = sorted({int(m[1]) for k in shapes if (m := re.fullmatch(r"b(\d+)\.conv0\.weight", k))})
            top = max(res, default=4)
            channels = {r: shapes[f"b{r}.conv0.weight"][0] for r in res}
            channels[4] = shapes["b4.conv.weight"][0]
            fields = dict(img_resolution=top, img_channels=shapes[f"b{top}.fromrgb.weight"][1],
                          mbstd_num_channels=shapes["b4.conv.weight"][1] - channels[4])
        else:
            res = sorted({int(m[1]) for k in shapes if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k))})
            top = max(res, default=4)
            channels = {r: shapes[f"synthesis.b{r}.conv1.weight"][0] for r in res}
            fc = sorted(int(m[1]) for k in shapes if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
            fields = dict(img_resolution=top, img_channels=shapes[f"synthesis.b{top}.torgb.weight"][0],
                          z_dim=shapes["mapping.fc0.weight"][1], w_dim=shapes["mapping.w_avg"][0],
                          mapping_layers=len(fc))
    except KeyError as e:
        raise ValueError(f"cannot infer a {which} config: key {e} is missing from the state dict") from None
    except IndexError:
        raise ValueError(f"cannot infer a {which} config: a weight has fewer dimensions than expected") from None
    expected_res = [2 ** k for k in range(2, top.bit_length())]
    if sorted(channels) != expected_res:
        raise ValueError(f"{which} blocks at resolutions {sorted(channels)}, expected {expected_res}")
    channel_max = max(channels.values())
    fields.update(channel_base=_infer_channel_base(channels, channel_max), channel_max=channel_max)
    return replace(StyleGAN2Config(**fields), **overrides)
