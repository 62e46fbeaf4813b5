"""An e4e-style encoder: a face image -> a W+ latent that stays close to W (Tov et al., SIGGRAPH 2021).

The encoder predicts one latent ``w`` (offset from the generator's ``w_avg``, as e4e's
``--start_from_latent_avg``) and a delta per generator layer; layer ``i`` gets ``w_avg + w + delta_i``
(``delta_0 = 0``). Progressive training opens the deltas one layer at a time (:attr:`Encoder.stage`:
layers ``< stage`` carry their delta), and a delta regulariser keeps them small, so the codes stay
near W where edits behave -- the editability side of the tradeoff notebook 02 measures.

Architecture, after pSp/e4e's feature pyramid at a scale that suits small worlds: a residual CNN
downsamples the face to 4 px; its 16, 8 and 4 px features are merged top-down (a small FPN) and
each generator layer reads the level that matches its resolution (coarse layers the 4 px level,
middle layers 8 px, fine layers 16 px): strided convolutions shared by a level take it to 2 px, and
a linear map per layer reads its code from there. Sizes here are
chosen for CPU training on a 64 px world (``EncoderConfig`` defaults, about 0.3 M parameters, 0.6 MB stored in float16); the
official IR-SE-50 backbone is for 256 px FFHQ crops on a GPU.

    E = Encoder(num_ws=10, w_dim=128, w_avg=G.mapping.w_avg)
    ws = E(images)            # [N, 3, R, R] in [-1, 1] -> [N, num_ws, w_dim]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import Config

ENCODER_FORMAT = "facelab.encoder/1"  # files written by facelab.train.encoder, read by facelab.encoder.load_encoder


@dataclass(frozen=True)
class EncoderConfig(Config):
    """The encoder's architecture.

    resolution: the side the input is resized to (64 for world64; e4e reads 256 px FFHQ crops, and
        facelab.train.encoder caps it at 256 for larger generators).
    width: channels of the first stage (doubling per stage up to ``max_width``).
    head_width: channels of the pyramid and of the strided convolutions that read it.
    """

    resolution: int = 64
    width: int = 16
    max_width: int = 48
    head_width: int = 24

    def __post_init__(self):
        if not (isinstance(self.resolution, int) and self.resolution >= 16 and
                self.resolution & (self.resolution - 1) == 0):
            raise ValueError(f"EncoderConfig.resolution must be a power of two >= 16, got {self.resolution!r}")
        for name in ("width", "max_width", "head_width"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"EncoderConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")


class _Down(nn.Module):
    """Residual block that halves the side: two 3x3 convs beside a pooled 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(cout, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.body(x) + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


def _trunk(cin: int, width: int, side: int) -> nn.Sequential:
    """Strided 3x3 convs from a ``side`` px feature map down to 2 px: [N, cin, s, s] -> [N, 4 * width]."""
    layers, c = [], cin
    for _ in range(int(math.log2(side)) - 1):
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = width
    return nn.Sequential(*layers, nn.Flatten())


def layer_resolution(i: int) -> int:
    """The resolution of the first convolution W+ entry ``i`` drives in StyleGAN2's synthesis network:
    ``ws[:, 0]`` the 4 px conv, then two entries per block (its upsampling conv0 and its conv1), the
    toRGB layers sharing the next entry (notebook 00 prints the map): 4, 8, 8, 16, 16, 32, 32, ...
    The last entry only drives the final toRGB; its resolution is reported one octave up."""
    return 2 ** (2 + (i + 1) // 2)


LEVELS = (4, 8, 16)  # the pyramid's sides: coarse, medium, fine


def layer_level(i: int) -> int:
    """Which pyramid level generator layer ``i`` reads: coarse (<= 8 px), medium (<= 32 px) or fine."""
    r = layer_resolution(i)
    return 0 if r <= 8 else 1 if r <= 32 else 2


class Encoder(nn.Module):
    """Face images -> W+ latents ``w_avg + w + delta_i`` (see the module docstring).

    num_ws, w_dim: the generator's ``G.num_ws`` and ``G.w_dim``; w_avg: its ``G.mapping.w_avg``
    [w_dim] (the codes are offsets from it); config: :class:`EncoderConfig`.
    """

    def __init__(self, num_ws: int, w_dim: int, w_avg: torch.Tensor | None = None,
                 config: EncoderConfig | None = None):
        super().__init__()
        cfg = self.config = config or EncoderConfig()
        self.num_ws, self.w_dim = num_ws, w_dim
        n_down = int(math.log2(cfg.resolution)) - 2  # down to 4 px
        chans = [min(cfg.width * 2 ** k, cfg.max_width) for k in range(n_down + 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, chans[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(_Down(chans[k], chans[k + 1]) for k in range(n_down))
        # side of each stage's output: resolution / 2 ** (k + 1); the pyramid taps 16, 8 and 4 px
        self.taps = [n_down - 1 - int(math.log2(side // 4)) for side in LEVELS]  # stage index per level
        level_ch = [chans[t + 1] for t in self.taps]
        top = cfg.head_width
        self.lateral = nn.ModuleList(nn.Conv2d(c, top, 1) for c in level_ch)
        self.trunks = nn.ModuleList(_trunk(top, cfg.head_width, side) for side in LEVELS)
        self.heads = nn.ModuleList(nn.Linear(4 * cfg.head_width, w_dim) for _ in range(num_ws))  # one per layer
        self.register_buffer("w_avg", torch.zeros(w_dim) if w_avg is None else w_avg.detach().float().clone())
        self.stage = num_ws  # layers < stage carry their delta (progressive training sets it lower)

    def check_generator(self, G) -> None:
        """Refuse, in one line, a generator this encoder was not trained for (shape of W+, ``w_avg``)."""
        if (self.num_ws, self.w_dim) != (G.num_ws, G.w_dim):
            raise ValueError(f"this encoder predicts W+ [{self.num_ws}, {self.w_dim}] but the generator takes "
                             f"[{G.num_ws}, {G.w_dim}]; use the world's own encoder (world.encoder)")
        w_avg = G.mapping.w_avg.detach().to(self.w_avg)
        if not torch.allclose(self.w_avg, w_avg, rtol=1e-3, atol=1e-3 * float(w_avg.abs().max()) + 1e-6):
            raise ValueError("this encoder was trained for another generator (its w_avg differs); use the world's "
                             "own encoder (world.encoder) or train one: python -m facelab.train.encoder")

    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features [N, C, s, s] at s = 4, 8, 16, merged top-down."""
        x = images
        if x.shape[-1] != self.config.resolution or x.shape[-2] != self.config.resolution:
            x = F.interpolate(x, size=(self.config.resolution,) * 2, mode="bilinear", align_corners=False,
                              antialias=True)
        x = self.stem(x)
        feats = []
        for block in self.down:
            x = block(x)
            feats.append(x)
        levels = [lat(feats[t]) for lat, t in zip(self.lateral, self.taps)]  # [coarse 4, medium 8, fine 16]
        for k in (1, 2):
            levels[k] = levels[k] + F.interpolate(levels[k - 1], scale_factor=2, mode="nearest")
        return levels

    def codes(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w [N, w_dim] relative to w_avg, deltas [N, num_ws, w_dim] with delta_0 = 0 and the closed ones 0)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"the encoder takes images [N, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        feats = [trunk(level) for trunk, level in zip(self.trunks, self.pyramid(images))]  # 3 x [N, 4 * head_width]
        out = [head(feats[layer_level(i)]) for i, head in enumerate(self.heads)]  # num_ws x [N, w_dim]
        w = out[0]
        open_ = [i > 0 and i < self.stage for i in range(self.num_ws)]
        deltas = torch.stack([d if o else torch.zeros_like(d) for d, o in zip(out, open_)], 1)
        return w, deltas

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        w, deltas = self.codes(images)
        return self.w_avg + w[:, None, :] + deltas  # [N, num_ws, w_dim]
