"""Encoder for Editing (notebooks 02 and 05): one forward pass from a face to a W+ latent near W.

Tov, Alaluf, Nitzan, Patashnik, Cohen-Or: "Designing an Encoder for StyleGAN Image Manipulation",
SIGGRAPH 2021 (e4e). Optimisation (:mod:`facelab.invert`) finds a latent per image in hundreds of
steps; an encoder is trained once to predict it in one pass. e4e's point is *where* the prediction
lands: a free W+ code reconstructs better but edits worse, so e4e predicts one ``w`` plus per-layer
deltas, opens the deltas one layer at a time during training (progressive training), keeps them
small (delta regularisation) and lets a latent discriminator push every layer's code towards the
distribution of W. The network is :class:`facelab.nets.encoder.Encoder`; its losses, with e4e's
weights as defaults (:class:`E4EConfig`), are :func:`e4e_loss`::

    E = world.encoder                          # trained by python -m facelab.train.encoder
    ws = fl.encoder.encode(E, faces)           # [N, num_ws, w_dim], one pass, no optimisation
    recon = G.synthesis(ws, noise_mode="const")

    total = l2 * MSE(x, G(E(x))) + lpips * d(x, G(E(x))) + id * (1 - cos(id(x), id(G(E(x)))))
          + delta * sum_i ||delta_i||_2 + w_disc * softplus(-D(E(x)_i))  (+ latent * MSE(E(x), w))

The last term is facelab's addition, not e4e's: e4e trains on photos, whose latents are unknown;
facelab trains on the world's own faces, whose ``w`` is known, and a direct pull towards it gets a
small CPU budget much further (``latent`` = 0 gives e4e's encoder loss exactly; its latent
discriminator is trained a little differently, see :class:`E4EConfig`).

The encoder's pivots also start PTI (``facelab.pti.tune(G, x, pivots="encoder")``), as the
official PTI code offers e4e pivots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .hub import load_encoder
from .imaging import check_images
from .nets.encoder import Encoder, EncoderConfig
from .utils import Config, device_of
from .worlds import register_reader

__all__ = ["E4EConfig", "Encoder", "EncoderConfig", "LatentDiscriminator", "check_encoder", "e4e_loss", "encode",
           "load_encoder", "progressive_stage"]


@dataclass(frozen=True)
class E4EConfig(Config):
    """e4e's training hyperparameters, with the official FFHQ recipe's values as defaults (the
    repository README's training command with ``--id_lambda 0.1``, as its authors give it for FFHQ).

    l2, lpips, id: weights of the pixel MSE, the perceptual distance and the identity loss (e4e:
    1, 0.8, 0.1). delta: weight of the deltas' L2 norms (2e-4). w_disc: weight of the latent
    discriminator's non-saturating loss on every open layer's code (0.1); disc_lr: its Adam
    learning rate (2e-5); r1: its R1 penalty on real ``w`` (10). Two departures in how that
    discriminator is trained (``facelab.train.encoder``): its fakes are every open layer's code of the
    current batch, with no pool of earlier codes (e4e's ``--use_w_pool`` shows it one random open layer
    per face, half of them swapped for a code from a pool of 50), and R1, every 16 steps, is added to
    that step's loss rather than taking an Adam step of its own. lr: the encoder's learning rate
    (1e-4; e4e uses Ranger, facelab Adam). progressive_start / progressive_every: the step at
    which the first delta opens and the steps between the next ones (20 000 / 2 000).
    latent: weight of the MSE to the known ``w`` of a generated face (facelab's addition; 0 in e4e).
    batch: faces per step (8); psi: truncation of the training faces (1: the whole W).
    mix: probability that a training face is a style mix of two latents (so W+ codes are seen).
    """

    l2: float = 1.0
    lpips: float = 0.8
    id: float = 0.1
    delta: float = 2e-4
    w_disc: float = 0.1
    disc_lr: float = 2e-5
    r1: float = 10.0
    lr: float = 1e-4
    progressive_start: int = 20_000
    progressive_every: int = 2_000
    latent: float = 0.0
    batch: int = 8
    psi: float = 1.0
    mix: float = 0.0

    def __post_init__(self):
        for name in ("l2", "lpips", "id", "delta", "w_disc", "disc_lr", "r1", "lr", "latent", "psi", "mix"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"E4EConfig.{name} must be a finite number >= 0, got {v!r}")
        for name in ("progressive_start", "progressive_every", "batch"):
            v = getattr(self, name)
            least = 0 if name == "progressive_start" else 1
            if not (isinstance(v, int) and v >= least):
                raise ValueError(f"E4EConfig.{name} must be a whole number >= {least}, got {v!r}")
        if self.mix > 1:
            raise ValueError(f"E4EConfig.mix is a probability, got {self.mix}")


# "cpu": what facelab trains world64's encoder with on two CPU cores; it gets e4e's schedule
# compressed to a few thousand steps, the pull towards the known latent, and the latent
# discriminator at 5x e4e's weight (w_disc 0.5: it won the comparison in encoder_world64.md, so a
# rebuild, `python -m facelab.train.build`, trains the recipe that was shipped).
PRESETS = {"paper": E4EConfig(),
           "cpu": E4EConfig(progressive_start=600, progressive_every=100, latent=1.0, mix=0.5, lr=3e-4,
                            w_disc=0.5)}


def progressive_stage(step: int, num_ws: int, cfg: E4EConfig) -> int:
    """How many layers carry their delta at ``step``: 1 (only ``w``) before ``progressive_start``,
    then one more every ``progressive_every`` steps, up to ``num_ws``."""
    if step < cfg.progressive_start:
        return 1
    return min(num_ws, 2 + (step - cfg.progressive_start) // cfg.progressive_every)


class LatentDiscriminator(nn.Module):
    """e4e's latent discriminator: an MLP (4 linear layers, LeakyReLU 0.2) from one ``w`` to a logit."""

    def __init__(self, w_dim: int, layers: int = 4):
        super().__init__()
        blocks = []
        for _ in range(layers - 1):
            blocks += [nn.Linear(w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Linear(w_dim, 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # [N, w_dim] -> [N]
        return self.net(w).squeeze(1)


def e4e_loss(x: torch.Tensor, recon: torch.Tensor, ws: torch.Tensor, E: Encoder, cfg: E4EConfig, *,
             perceptual=None, identity=None, D: LatentDiscriminator | None = None,
             w_true: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The encoder's loss for faces ``x`` and their reconstructions ``recon`` = G(ws), ws = E(x).

    x, recon: [N, 3, R, R] in [-1, 1]; ws: [N, num_ws, w_dim]; perceptual(a, b) -> [N] and
    identity(a, b) -> [N] cosine similarities (skipped when None or weighted 0); D: the latent
    discriminator (its term covers the open layers, ``E.stage``); w_true: the faces' own W+ latents
    for the ``latent`` term. Returns (the total, each weighted term as a float).
    """
    terms: dict[str, torch.Tensor] = {"l2": cfg.l2 * F.mse_loss(recon, x)}
    if cfg.lpips > 0 and perceptual is not None:
        terms["lpips"] = cfg.lpips * perceptual(recon, x).mean()
    if cfg.id > 0 and identity is not None:
        terms["id"] = cfg.id * (1 - identity(recon, x)).mean()
    if cfg.delta > 0 and E.stage > 1:
        deltas = ws[:, 1:E.stage] - ws[:, :1]  # [N, stage - 1, w_dim]
        terms["delta"] = cfg.delta * deltas.norm(dim=2).mean(0).sum()
    if cfg.w_disc > 0 and D is not None:
        logits = D(ws[:, :E.stage].reshape(-1, ws.shape[-1]))
        terms["w_disc"] = cfg.w_disc * F.softplus(-logits).mean()
    if cfg.latent > 0 and w_true is not None:
        terms["latent"] = cfg.latent * F.mse_loss(ws, w_true)
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def check_encoder(E: Encoder, G) -> None:
    """Refuse an encoder trained for another generator, in one line (:meth:`Encoder.check_generator`)."""
    E.check_generator(G)


def encode(E: Encoder, images: torch.Tensor, *, G=None, batch_size: int = 64) -> torch.Tensor:
    """W+ latents ``[N, num_ws, w_dim]`` of faces ``images`` [N, 3, H, W] in [-1, 1], in one pass each.

    The faces must be aligned with the world's crop (``world.align(photo)``). With ``G`` given, the
    encoder is first checked against it (:func:`check_encoder`). No gradients.
    """
    check_images(images, "images", channels=3, square=True, nonempty=True)
    if G is not None:
        check_encoder(E, G)
    device = device_of(E)
    with torch.no_grad():
        out = [E(chunk.to(device, torch.float32)) for chunk in images.split(batch_size)]
    return torch.cat(out)


register_reader("encoder", load_encoder)  # a World reads its encoder file with this
