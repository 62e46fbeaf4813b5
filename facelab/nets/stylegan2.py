"""StyleGAN2 generator and discriminator in pure PyTorch.

Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. "Analyzing and Improving the Image Quality of
StyleGAN", CVPR 2020; layout and defaults as in StyleGAN2-ADA (Karras et al., NeurIPS 2020).

    z [N, z_dim] --mapping--> w [N, w_dim] --broadcast--> ws [N, num_ws, w_dim] --synthesis--> image
                                                                              [N, 3, R, R] in ~[-1, 1]

* Mapping: pixel norm of z, ``mapping_layers`` fully connected layers with leaky ReLU, equalised
  learning rate with a 0.01 learning-rate multiplier, a tracked average ``w_avg`` and truncation
  ``w_avg + psi * (w - w_avg)`` applied to the first ``truncation_cutoff`` layers.
* Synthesis: a learned 4x4 constant, then per resolution two modulated 3x3 convolutions with weight
  demodulation (the first one upsamples 2x through the FIR filter [1, 3, 3, 1]), per-layer noise with
  a learned strength, and a modulated 1x1 toRGB whose outputs are upsampled and summed ("skip").
  ``num_ws = 2 * log2(R) - 2``: one w per convolution plus one for the last toRGB; each toRGB
  shares the w of the following block's first convolution.
* Discriminator: residual blocks with FIR downsampling, minibatch standard deviation, and a
  4x4 epilogue.

Module and parameter names follow StyleGAN2-ADA, so an official state dict maps onto ours with the
table in :mod:`facelab.nets.official` (the only official keys we do not keep are the constant
``resample_filter`` buffers, which we rebuild).

No custom CUDA ops. A modulated convolution runs either as per-sample modulated kernels in one
(grouped) convolution, NVIDIA's "fused modconv", or by scaling the activations before and after an
ordinary convolution (the "non-fused" path): the same numbers to float rounding, chosen per layer by
batch size, shapes and what needs gradients (:func:`choose_modulation`). Noise, bias and the
activation gain are folded into the convolution's output and the leaky ReLU runs in place, so that
a layer allocates as few full-resolution tensors as possible; on the CPU the activations are
channels_last (oneDNN's native layout). ``G.synthesis.modulation`` and ``G.synthesis.memory_format``
override both choices.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .resample import conv_down2, conv_up2, setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")
LRELU_GAIN = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class StyleGAN2Config:
    """Hyperparameters of a StyleGAN2 generator/discriminator pair.

    Defaults are StyleGAN2 config-f at 1024 px as released for FFHQ.
    Channels at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    """

    img_resolution: int = 1024
    img_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = None  # clamp conv outputs to +-conv_clamp (ADA uses 256 with fp16)
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1

    def __post_init__(self):
        r = self.img_resolution
        if not (isinstance(r, int) and 4 <= r <= 4096 and r & (r - 1) == 0):
            raise ValueError(f"img_resolution must be a power of two in [4, 4096], got {r!r}")
        for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def log2_res(self) -> int:
        return int(math.log2(self.img_resolution))

    @property
    def num_ws(self) -> int:
        return 2 * self.log2_res - 2

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, self.log2_res + 1)]

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StyleGAN2Config":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown StyleGAN2Config fields {unknown}; is this a facelab checkpoint?")
        return cls(**known)


PRESETS: dict[str, StyleGAN2Config] = {
    # The embedded world: 64 px, 128 channels down to 64 at 64x64, w_dim 128 (about 1.5 M params
    # in G). w_dim 128 keeps InterFaceGAN's SVMs and the latent-to-latent mapper (whose hidden
    # layers are num_ws * w_dim wide) small enough for a laptop.
    "world64": StyleGAN2Config(img_resolution=64, z_dim=128, w_dim=128, channel_base=4096,
                               channel_max=128),
    # StyleGAN2 config-f (FFHQ 1024): the shapes of NVIDIA's released generator.
    "ffhq-config-f": StyleGAN2Config(),
    # A small architecture unlike world64 in resolution, latent width and mapping depth (32 px,
    # w_dim 64, a 4-layer mapping, 64 channels down to 32 at 32x32): tests and timing scripts use it
    # to catch anything hard-wired to world64's shapes. (The ``mini32`` *world* of ``make
    # test-worlds`` is world64 cut at 32 px, not this preset.)
    "mini32": StyleGAN2Config(img_resolution=32, z_dim=64, w_dim=64, mapping_layers=4,
                              channel_base=1024, channel_max=64),
    # A tiny network for unit tests and smoke runs.
    "tiny": StyleGAN2Config(img_resolution=32, z_dim=32, w_dim=32, mapping_layers=2,
                            channel_base=256, channel_max=32),
}


def get_config(preset: str | StyleGAN2Config, **overrides) -> StyleGAN2Config:
    """A preset by name (see ``PRESETS``) or a config, with field overrides applied."""
    if isinstance(preset, StyleGAN2Config):
        cfg = preset
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------
# Layers with equalised learning rate: weights are stored N(0, 1) / lr_multiplier and scaled by
# lr_multiplier / sqrt(fan_in) at run time, so Adam sees every weight at the same scale.


class FullyConnected(nn.Module):
    """y = act(x @ (g * W)^T + lr_mul * b). x: [N, in] -> [N, out]."""

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.activation}"


def bias_act(x: torch.Tensor, bias: torch.Tensor, *, lrelu: bool, gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias, optional leaky ReLU (with its sqrt(2) gain), gain, clamp."""
    x = x + bias.to(x.dtype).view(1, -1, 1, 1)
    if lrelu:
        x = F.leaky_relu(x, 0.2)
        gain = gain * LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def float32(t: torch.Tensor):
    """Disable autocast (mixed precision) for a block: styles, demodulation and mapping stay float32."""
    if t.device.type not in ("cpu", "cuda", "mps", "xpu"):  # e.g. "meta": no autocast to disable
        return contextlib.nullcontext()
    return torch.autocast(device_type=t.device.type, enabled=False)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm: scale each vector to unit root-mean-square."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ---------------------------------------------------------------------------------------------
# Mapping network


class MappingNetwork(nn.Module):
    """z [N, z_dim] -> ws [N, num_ws, w_dim] (the same w broadcast to every layer)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.w_dim, cfg.num_ws
        self.num_layers = cfg.mapping_layers
        self.w_avg_beta = cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(dims[i], dims[i + 1], activation="lrelu",
                                                   lr_multiplier=cfg.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool | None = None) -> torch.Tensor:
        """Map z to broadcast ws.

        z: [N, z_dim]. Returns ws: [N, num_ws, w_dim].
        ``truncation_psi`` pulls w toward ``w_avg`` (psi = 0 gives w_avg, 1 leaves w unchanged) in
        the first ``truncation_cutoff`` layers (all layers when None). ``w_avg`` is updated as an
        exponential moving average in training mode unless ``update_w_avg=False``.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        with float32(z):  # the mapping always runs in float32, also under mixed precision
            x = normalize_2nd_moment(z.float())
            for i in range(self.num_layers):
                x = getattr(self, f"fc{i}")(x)  # [N, w_dim]
        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            ws = truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
        return ws


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """The truncation trick on ws [N, num_ws, w_dim]: layers < cutoff move to w_avg + psi (w - w_avg)."""
    cutoff = ws.shape[1] if cutoff is None else cutoff
    out = ws.clone()
    out[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return out


# ---------------------------------------------------------------------------------------------
# Synthesis network


MODULATIONS = ("auto", "grouped", "scaled")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or the widest floating dtype of ``tensors`` when that is wider (float64 stays float64)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / ||weight * styles_n||_2 per sample and output channel: [N, O] (StyleGAN2 eq. 3, eps 1e-8).

    weight: [O, I, k, k]; styles: [N, I]. Uses |W_o * s|^2 = sum_i s_i^2 sum_k W_oik^2, so the
    [N, O, I, k, k] kernels are never built. Computed in float32 or the inputs' precision if higher
    (float64 stays float64), with autocast off.
    """
    dtype = compute_dtype(weight, styles)
    with float32(styles):
        wsq = weight.to(dtype).square().sum(dim=(2, 3))  # [O, I]
        return (styles.to(dtype).square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]


# choose_modulation's thresholds on (kernel elements) / (activation elements), per sample: where
# the grouped path measured faster, layer by layer, on a CPU (1 thread, glibc's default allocator;
# world64 and config-f shapes). Other machines may draw the lines elsewhere; both paths are exact.
GROUPED_BELOW = {"no_grad": 0.1, "weight_grad": 0.25, "styles_grad": 0.002}


def choose_modulation(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, up: bool = False) -> str:
    """The cheaper way to run one modulated convolution: "grouped" or "scaled".

    Both do the same convolution; they differ in the extra work around it. "grouped" (StyleGAN2's
    fused modconv) builds per-sample kernels, passes over N kernels of O*I*k*k elements; "scaled"
    passes over the N*(I*H*W + O*H'*W') input and output activations (forward and backward), each
    pass at high resolution a fresh allocation too (page faults on a CPU). So "grouped" pays off
    when the kernel is small next to the activations; the ratio where it starts to win depends on
    what needs gradients (``GROUPED_BELOW``):

    * no gradients (rendering): below 0.1: world64's 64 px conv1; config-f's conv1 from 128 px,
      every conv from 256 px;
    * gradients for the weight (PTI, training): below 0.25: both of world64's 64 px convs,
      config-f's from 128 px;
    * gradients for the styles only (inversion, G frozen): below 0.002: config-f's 512 px conv1
      and 1024 px convs, none in world64. Here the grouped path needs a weight-gradient
      convolution, as costly as the forward one, that the scaled path replaces by a few passes
      over the activations; only at the largest activations do those cost more.

    Batches > 1 are "scaled" (per-sample kernels defeat batching, and a grouped convolution of a
    channels_last batch needs layout copies), except 1x1 kernels (toRGB, 3 outputs) at any batch:
    their per-sample kernels are tiny and the convolution is one batched matrix product.
    """
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    ratio = o * i * kh * kw / (i * h * w + o * h * w * (4 if up else 1))
    if kh == kw == 1 and not up:
        return "grouped" if ratio < 1 else "scaled"
    if n > 1:
        return "scaled"
    if not torch.is_grad_enabled() or not (styles.requires_grad or weight.requires_grad):
        rule = "no_grad"
    else:
        rule = "weight_grad" if weight.requires_grad else "styles_grad"
    return "grouped" if ratio < GROUPED_BELOW[rule] else "scaled"


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     demodulate: bool = True, up: bool = False,
                     resample_filter: torch.Tensor | None = None, modulation: str = "auto",
                     noise: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                     gain: float = 1.0) -> torch.Tensor:
    """Modulated convolution (StyleGAN2 eq. 1-3), optionally followed by noise, bias and a gain.

    x: [N, I, H, W]; weight: [O, I, k, k]; styles: [N, I]. Returns
    ``gain * (conv(x, w''_n) + noise + bias)``: [N, O, H, W] ([2H, 2W] if up), in x's layout
    (channels_last stays channels_last). The per-sample kernel is ``w'_n = weight * styles_n``,
    demodulated to unit L2 norm per output channel (``w''_n = w'_n / ||w'_n||``, eps 1e-8) when
    ``demodulate``. noise: [N or 1, 1, H', W'] (already scaled by its strength); bias: [O].

    ``modulation``: "grouped" builds the per-sample kernels and runs one grouped convolution
    (StyleGAN2's fused modconv); "scaled" scales x by the styles and the output by the
    demodulation coefficients around a shared-weight convolution; "auto" picks the cheaper one
    for these shapes (:func:`choose_modulation`). They agree to float rounding, gradients too.
    Styles and demodulation are computed in float32 (the inputs' precision if higher), with
    autocast off; the convolution runs in x's dtype (or autocast's).
    """
    if modulation == "auto":
        modulation = choose_modulation(x, weight, styles, up=up)
    elif modulation not in MODULATIONS:
        raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}")
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    if styles.shape != (n, i) or weight.shape[1] != i:
        raise ValueError(f"modulated_conv2d: x {list(x.shape)}, weight {list(weight.shape)} and styles "
                         f"{list(styles.shape)} do not fit (x [N, I, H, W], weight [O, I, k, k], styles [N, I])")
    if up and kh * kw > 1 and resample_filter is None:
        raise ValueError("modulated_conv2d(up=True) needs the resample_filter")
    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None  # [N, O]
    run = _modconv_grouped if modulation == "grouped" else _modconv_scaled
    return run(x, weight, styles, dcoefs, up=up, resample_filter=resample_filter, noise=noise, bias=bias, gain=gain)


def _modconv_grouped(x, weight, styles, dcoefs, *, up, resample_filter, noise, bias, gain) -> torch.Tensor:
    """:func:`modulated_conv2d` with per-sample kernels (``modulation="grouped"``); dcoefs [N, O] or None."""
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    # Per-sample kernels w''_n = weight * (d_n s_n^T) * gain, one pass over the weight.
    dtype = compute_dtype(x, weight, styles)
    with float32(styles):
        scale = styles.to(dtype)[:, None, :] * gain  # [N, 1, I]
        if dcoefs is not None:
            scale = scale * dcoefs[:, :, None]  # [N, O, I]
        wmod = (weight.to(dtype)[None] * scale[..., None, None]).to(x.dtype)  # [N, O, I, k, k]
    b = None if bias is None else (bias * gain).to(x.dtype)
    if kh == kw == 1 and not up:  # 1x1 (toRGB): a batched matrix product over pixels
        if x.is_contiguous(memory_format=torch.channels_last):
            xf = x.permute(0, 2, 3, 1).reshape(n, h * w, i)  # [N, HW, I], a view
            if n == 1:  # a plain matrix product is faster than a batch of one
                x2, wt = xf.view(h * w, i), wmod.view(o, i).t()
                y = (torch.mm(x2, wt) if b is None else torch.addmm(b, x2, wt)).view(1, h * w, o)
            else:
                y = torch.bmm(xf, wmod.view(n, o, i).transpose(1, 2))  # [N, HW, O]
                if b is not None:
                    y = y.add_(b)
            y = y.view(n, h, w, o).permute(0, 3, 1, 2)  # [N, O, H, W], channels_last strides
        else:
            y = torch.bmm(wmod.view(n, o, i), x.reshape(n, i, h * w))  # [N, O, HW]
            if b is not None:
                y = y.add_(b[:, None])
            y = y.view(n, o, h, w)
    else:
        # One sample is an ordinary convolution; more are one grouped convolution (reshapes
        # that copy when x is channels_last, and leave a view that in-place ops below must track).
        xg = x if n == 1 else x.reshape(1, n * i, h, w)
        wg = wmod.reshape(n * o, i, kh, kw)
        bg = None if b is None else b.repeat(n)
        if up:
            y = conv_up2(xg, wg, resample_filter, groups=n, bias=bg)
        else:
            y = F.conv2d(xg, wg, bg, padding=kh // 2, groups=n)
        if n > 1:
            y = y.reshape(n, o, *y.shape[2:])
    if noise is not None:
        y = y.add_((noise * gain).to(y.dtype))  # the convolutions do not keep their outputs
    return y


def _modconv_scaled(x, weight, styles, dcoefs, *, up, resample_filter, noise, bias, gain) -> torch.Tensor:
    """:func:`modulated_conv2d` around one shared-weight convolution (``modulation="scaled"``)."""
    n = x.shape[0]
    kh = weight.shape[2]
    # Scaled: x * s, shared-weight convolution, * d, then noise and bias in place.
    x = x * styles.to(x.dtype).view(n, -1, 1, 1)
    if dcoefs is None:  # the gain folds into the weight, the bias into the convolution
        wt = (weight * gain).to(x.dtype) if gain != 1 else weight.to(x.dtype)
        b = None if bias is None else (bias * gain).to(x.dtype)
        bias = None
    else:
        wt, b = weight.to(x.dtype), None
    if not up and x.is_contiguous(memory_format=torch.channels_last):
        wt = wt.contiguous(memory_format=torch.channels_last)  # converted once, not again for the backward pass
    if up:
        y = conv_up2(x, wt, resample_filter, bias=b)
    else:
        y = F.conv2d(x, wt, b, padding=kh // 2)
    if dcoefs is not None:
        d = (dcoefs * gain).to(y.dtype).view(n, -1, 1, 1)
        if torch.is_grad_enabled() and (y.requires_grad or d.requires_grad):
            y = y * d  # autograd keeps y for d's gradient
        else:
            y = y.mul_(d)  # rendering: no new full-size tensor
    if noise is not None:
        y = y.add_((noise * gain).to(y.dtype))
    if bias is not None:
        y = y.add_((bias * gain).to(y.dtype).view(1, -1, 1, 1))
    return y


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + leaky ReLU. [N, I, r/up, r/up] -> [N, O, r, r]."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int,
                 up: bool = False, conv_clamp: float | None = None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "random",
                noise: torch.Tensor | None = None, modulation: str = "auto") -> torch.Tensor:
        with float32(w):
            styles = self.affine(w.float())  # [N, I]
        if noise is None:
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution,
                                    device=x.device, dtype=x.dtype)
            elif noise_mode == "const":
                noise = self.noise_const
        if noise is not None:
            noise = noise * self.noise_strength  # [N or 1, 1, r, r] (or [r, r])
        # sqrt(2) * lrelu(a) = lrelu(sqrt(2) * a): the activation gain folds into the convolution.
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter,
                             modulation=modulation, noise=noise, bias=self.bias, gain=LRELU_GAIN)
        x = F.leaky_relu_(x, 0.2)  # in place: nothing upstream keeps the pre-activation
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation: [N, I, r, r] -> [N, 3, r, r]."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, modulation: str = "auto") -> torch.Tensor:
        with float32(w):
            styles = self.affine(w.float()) * self.weight_gain  # [N, I]
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, modulation=modulation, bias=self.bias)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv0), conv1, toRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int,
                 img_channels: int, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                        up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x, img, ws, *, noise_mode="random", noise=(None, None), modulation="auto",
                channels_last=False):
        """ws: [N, num_conv + 1, w_dim] (the last one is the toRGB's)."""
        kw = dict(noise_mode=noise_mode, modulation=modulation)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)  # [N, C, 4, 4]
            if channels_last:  # later layers keep the layout of their input
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, ws[:, 0], noise=noise[0], **kw)
        else:
            x = self.conv0(x, ws[:, 0], noise=noise[0], **kw)
            x = self.conv1(x, ws[:, 1], noise=noise[1], **kw)
        y = self.torgb(x, ws[:, self.num_conv], modulation=modulation).float()
        if img is not None:
            with float32(img):  # the image is accumulated in float32, also under autocast
                y = upsample2d(img, self.resample_filter).add_(y)
        return x, y


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] (or w [N, w_dim], broadcast) -> image [N, 3, R, R]."""

    def __init__(self, cfg: StyleGAN2Config, *, modulation: str = "auto", memory_format: str = "auto"):
        super().__init__()
        self.w_dim, self.num_ws, self.img_resolution = cfg.w_dim, cfg.num_ws, cfg.img_resolution
        self.block_resolutions = cfg.block_resolutions
        # Run-time choices (not weights, not in the state dict); the same numbers to float rounding.
        self.modulation = modulation  # see modulated_conv2d: "auto", "grouped" or "scaled"
        self.memory_format = memory_format  # activations: "auto" (channels_last on CPU), "channels_last", "contiguous"
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_ch, cfg.channels(res), w_dim=cfg.w_dim,
                                                    resolution=res, img_channels=cfg.img_channels,
                                                    conv_clamp=cfg.conv_clamp))

    def layers(self) -> list[SynthesisLayer]:
        """The noise-carrying conv layers, in the order of their ws index."""
        out = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            out += [block.conv1] if res == 4 else [block.conv0, block.conv1]
        return out

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes [1, 1, r, r] of the per-layer noise maps accepted by ``forward(noise=...)``."""
        return [(1, 1, layer.resolution, layer.resolution) for layer in self.layers()]

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "random",
                noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Render images.

        ws: W [N, w_dim] (broadcast to every layer) or W+ [N, num_ws, w_dim].
        noise_mode: "random" (fresh noise every call), "const" (the stored ``noise_const`` maps,
        deterministic) or "none" (no noise, deterministic).
        noise: optional explicit maps, one per conv layer, each [N or 1, 1, r, r] (see
        ``noise_shapes``); they override ``noise_mode``.
        Returns images [N, img_channels, R, R], roughly in [-1, 1] (not clamped).
        """
        ws = self.check_ws(ws)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise is not None and len(noise) != len(self.layers()):
            raise ValueError(f"noise must hold {len(self.layers())} maps (see noise_shapes()), got {len(noise)}")
        if self.modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {self.modulation!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        channels_last = (self.memory_format == "channels_last"
                         or self.memory_format == "auto" and ws.device.type == "cpu")
        noise = list(noise) if noise is not None else [None] * len(self.layers())
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws[:, w_idx: w_idx + block.num_conv + 1]  # toRGB shares the next conv's w
            block_noise = noise[w_idx: w_idx + block.num_conv] + [None]
            x, img = block(x, img, block_ws, noise_mode=noise_mode, noise=block_noise,
                           modulation=self.modulation, channels_last=channels_last)
            w_idx += block.num_conv
        return img.contiguous()

    def check_ws(self, ws: torch.Tensor) -> torch.Tensor:
        """Validate a latent and return it as W+ [N, num_ws, w_dim] float32."""
        if not isinstance(ws, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor, got {type(ws).__name__}")
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"latents must be W [N, {self.w_dim}] or W+ [N, {self.num_ws}, {self.w_dim}], "
                             f"got {list(ws.shape)}")
        return ws.float()


class Generator(nn.Module):
    """StyleGAN2 generator: ``G(z) = G.synthesis(G.mapping(z))``.

    >>> G = Generator(get_config("tiny"))
    >>> img = G(torch.randn(2, G.z_dim), truncation_psi=0.7)   # [2, 3, 32, 32]
    """

    def __init__(self, cfg: StyleGAN2Config | str = "world64"):
        super().__init__()
        cfg = get_config(cfg)
        self.cfg = cfg
        self.z_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.w_dim, cfg.num_ws
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg)

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "random") -> torch.Tensor:
        """z: [N, z_dim] -> images [N, 3, R, R]."""
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    @property
    def w_avg(self) -> torch.Tensor:
        """The tracked mean of W, [w_dim]."""
        return self.mapping.w_avg

    def extra_repr(self) -> str:
        return f"resolution={self.img_resolution}, z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


def lower_resolution(G: Generator, resolution: int) -> Generator:
    """A generator that stops at ``resolution``: G's own image at that block, with no training.

    StyleGAN2's skip generator sums the upsampled toRGB outputs of every block, so the running image
    after the block at ``resolution`` is already a coarser rendering of G's face. The copy keeps the
    mapping network, ``w_avg`` and the blocks up to ``resolution`` (same weights; channels are
    ``min(channel_base // r, channel_max)``, so they match) and drops the finer ones; it takes the
    first ``num_ws`` of G's W+ codes. A deliberately different architecture (resolution, ``num_ws``)
    for checking that nothing assumes one world (issue #18: ``mini32`` is world64 at 32 px).
    """
    if resolution not in G.cfg.block_resolutions or resolution == G.img_resolution:
        raise ValueError(f"resolution must be one of G's coarser blocks {list(G.cfg.block_resolutions[:-1])}, "
                         f"got {resolution}")
    small = Generator(replace(G.cfg, img_resolution=resolution))
    own = small.state_dict()
    small.load_state_dict({k: v for k, v in G.state_dict().items() if k in own})
    return small.to(next(G.parameters()).device).train(G.training)


def style_mix(ws_a: torch.Tensor, ws_b: torch.Tensor, crossover: int) -> torch.Tensor:
    """Coarse styles (layers < crossover) from ``ws_a``, fine ones from ``ws_b``.

    ws_a, ws_b: [N, num_ws, w_dim] (broadcastable). Returns [N, num_ws, w_dim].
    """
    if ws_a.ndim != 3 or ws_b.ndim != 3:
        raise ValueError("style_mix expects W+ latents [N, num_ws, w_dim]; broadcast W with G.mapping")
    num_ws = ws_a.shape[1]
    if not 0 <= crossover <= num_ws:
        raise ValueError(f"crossover must be in [0, {num_ws}], got {crossover}")
    a, b = torch.broadcast_tensors(ws_a, ws_b)
    return torch.cat([a[:, :crossover], b[:, crossover:]], dim=1)


# ---------------------------------------------------------------------------------------------
# Discriminator


class Conv2dLayer(nn.Module):
    """Equalised-lr conv (optionally FIR-downsampling) + bias + optional leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 lrelu: bool = True, down: bool = False, conv_clamp: float | None = None):
        super().__init__()
        self.lrelu, self.down, self.conv_clamp = lrelu, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down:
            x = conv_down2(x, w, self.resample_filter)
        else:
            x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        if self.bias is None:
            return x * gain if gain != 1 else x
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, lrelu=self.lrelu, gain=gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    """Residual block: [N, C_in, r, r] -> [N, C_out, r/2, r/2] (plus fromRGB in the first block)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, *, img_channels: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, lrelu=False, down=True)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStd(nn.Module):
    """Append the mean standard deviation over groups of samples as extra feature maps."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # The largest group size <= group_size that divides the batch (the official code needs
        # N % group_size == 0; this also accepts odd batches such as a single image).
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = (y - y.mean(0)).square().mean(0)  # variance over the group
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [n, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 features -> one logit per image."""

    def __init__(self, in_channels: int, *, mbstd_group_size: int, mbstd_num_channels: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x) if self.mbstd is not None else x)
        return self.out(self.fc(x.flatten(1)))  # [N, 1]


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: images [N, 3, R, R] in [-1, 1] -> logits [N, 1]."""

    def __init__(self, cfg: StyleGAN2Config | str = "world64"):
        super().__init__()
        cfg = get_config(cfg)
        self.cfg = cfg
        self.img_resolution = cfg.img_resolution
        self.block_resolutions = [2 ** i for i in range(cfg.log2_res, 2, -1)]
        for res in self.block_resolutions:
            in_ch = cfg.channels(res) if res < cfg.img_resolution else 0
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, cfg.channels(res), cfg.channels(res // 2),
                                                        img_channels=cfg.img_channels,
                                                        conv_clamp=cfg.conv_clamp))
        self.b4 = DiscriminatorEpilogue(cfg.channels(4), mbstd_group_size=cfg.mbstd_group_size,
                                        mbstd_num_channels=cfg.mbstd_num_channels,
                                        conv_clamp=cfg.conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.img_resolution
        if img.ndim != 4 or img.shape[2:] != (r, r):
            raise ValueError(f"images must be [N, C, {r}, {r}], got {list(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
