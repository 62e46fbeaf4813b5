"""Pivotal Tuning Inversion (PTI): fine-tune the generator around an inverted latent.

Roich, Mokady, Bermano, Cohen-Or. "Pivotal Tuning for Latent-based Editing of Real Images",
ACM TOG 2022 (arXiv:2106.05744, 2021); official code ``github.com/danielroich/PTI``.

A W inversion of a real photo edits well but looks like someone else (the distortion-editability
tradeoff, notebook 02). PTI keeps the editable latent and moves the *generator* instead:

1. **Pivot.** Invert each image into W with the StyleGAN2 projector
   (:func:`facelab.invert.project`, ``space="w"``, ``pivot_steps`` = 450): ``w_p``.
2. **Pivotal tuning.** With ``w_p`` frozen, tune the synthesis network's weights ``theta`` with
   Adam (lr 3e-4) for up to ``tune_steps`` = 350 steps on

       L_pt = perceptual_weight * d(G(w_p; theta), x) + pixel_weight * MSE(G(w_p; theta), x)

   (``d``: a perceptual distance, LPIPS in the paper, :class:`facelab.metrics.PerceptualDistance`
   here), rendered with the generator's constant noise maps (``noise_mode="const"``).
3. **Locality regularisation** (paper Sec. 3.3, ``locality=True``). Every ``locality_every``
   steps draw ``w_z = mapping(z, psi=latent_ball_psi)`` and step ``alpha`` from the pivot toward
   it, ``w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||`` (the norm over the whole
   ``[num_ws, w_dim]`` latent, as the official code takes it), and ask the tuned generator to
   render ``w_r`` as the original one does:

       L_R = locality_l2_weight * MSE(G(w_r; theta), G(w_r; theta_0))
             + locality_perceptual_weight * d(G(w_r; theta), G(w_r; theta_0))

   ``G(w_r; theta_0)`` comes from the caller's untouched generator under ``no_grad`` and both
   images are rendered without noise (``locality_noise_mode="none"``), as in the official code.
4. **Early stop.** Before each update the per-image perceptual loss is compared with
   ``early_stop``; when every image is below it, tuning stops (the official single-image coach
   breaks the same way, on LPIPS <= 0.06).

Decisions, read from the official code (``configs/hyperparameters.py``, ``training/coaches/*``,
``criteria/localitly_regulizer.py``) where the paper is silent:

* **What is tuned.** The official coach gives Adam *all* of G's parameters, but the loss only
  passes through ``G.synthesis`` (the pivots are fixed latents; the regulariser maps ``z`` with
  the *original* mapping), so the mapping network never receives a gradient and Adam leaves it
  alone. Here exactly the synthesis parameters are tuned (convolution weights, biases, the 4x4
  constant, the style affines, the toRGB layers and the noise strengths) and the mapping network
  and all buffers (``w_avg``, ``noise_const``) are copied unchanged. Same result, stated plainly.
* **Noise.** The official W projector optimises noise maps on a *copy* of G and throws them away;
  tuning renders with G's stored constant noise. So do we: only the projection's ``ws`` are used.
* **Pivot learning rate.** The official PTI projector keeps the StyleGAN2-ADA projector's
  schedule but lowers its initial learning rate from 0.1 to 0.01 (``first_inv_lr = 5e-3`` is
  defined but never passed). In world64, 450 steps at 0.01 stop short: on Grace Hopper's photo and
  on a world face the pivot's MSE was 0.27 / 0.11 at 0.01 and 0.17 / 0.10 at 0.1 (dlib-lpips 2.48
  / 1.31 vs 2.38 / 1.18, rendered with G's constant noise as tuning sees them). So ``pivot_lr``
  defaults to the StyleGAN2 projector's own 0.1; ``pivot_lr=0.01`` is the official repository.
* **Several images** (paper Sec. 3.4, "multiple identities"): one generator, one pivot per image,
  and the loss of a step is the mean over the images (the paper's formulation). The official
  multi-ID coach instead takes one Adam step per image in turn (N updates per "step"); batching
  them is the paper's equation, N times fewer updates, and as fast as one image on a GPU. Each
  image gets its own ``locality_samples`` regulariser latents around its own pivot. Early stop
  waits for the *worst* image (the official multi-ID coach has none).
* **Locality default.** The official ``use_locality_regularization`` is ``False``; the paper
  presents it as part of the method, and facelab turns it on (``locality=False`` reproduces the
  official default).
* **alpha = 30** is measured in the official W space (18 x 512). In the embedded world64 (10 x
  128) the typical distance ``||w_z - w_p||`` from a psi = 0.5 sample to a psi = 1 pivot, over the
  whole latent, is about 22 (median over 200 pairs), so ``w_r`` lands about 1.3 times as far
  from the pivot as ``w_z``: a little beyond the sample, still a plausible latent. Re-measure for
  another generator with :func:`locality_scale`.

**Early-stop threshold.** The paper's 0.06 is in LPIPS-AlexNet units and means nothing for
another metric. facelab's default distance is the "dlib-lpips" of :mod:`facelab.metrics`, so the
threshold is re-derived with :func:`calibrate_threshold`: the median perceptual distance between a
world face and the same face shifted by one pixel (horizontally or vertically, edge repeated) --
a difference nobody sees side by side, i.e. "the reconstruction is as close to the photo as the
photo is to itself, one pixel off". ``EARLY_STOP_DLIB`` stores the measured value (0.32; a 2 px
shift gives 0.84); pass ``early_stop=None`` to always run ``tune_steps``, or recalibrate for
another ``perceptual``. Measured with the defaults (pivots at ``pivot_lr`` 0.1): a world face
(psi 1, random noise) starts tuning at 1.48 and crosses 0.32 after 111 steps (0.07 at 350);
Grace Hopper's photo (``bench/pti.py --early-stop``, this version) crosses it after 278 steps
(0.24 at 350), so the threshold ends the tuning of in-domain faces early and lets real photos use
most of the budget, as 0.06 does at 1024 px.

**Speed.** ``python bench/pti.py --device cpu --runs 3 --floor`` on the course's 2-core machine
(Grace Hopper, early stop off): 450 projection steps 37.7 s + 350 tuning steps 57.9 s, 96.9 s in
all (with the default early stop, 278 tuning steps and 84 s). A projection step is 3.3 GFLOP and a
tuning step with the regulariser 9.5 GFLOP, 4.8 TFLOP for the paper's counts: even at the rate of
a large matrix product on these cores (211-327 GFLOP/s measured) that is 14.7-22.8 s of pure
arithmetic, and the convolution kernels alone take 40-47 s at their measured speed. Interactive PTI needs a GPU
(``PTIConfig(device="cuda")``, or a generator on the GPU).

**What the regulariser buys** (same photo, 350 steps, :func:`locality_change` with 32 latents):
at random latents (psi 1) the tuned generator's images moved by MSE 0.083 / dlib-lpips 1.17
without it and 0.015 / 0.58 with it, at neighbours of the pivot (radius 10) by 0.138 / 1.64
and 0.085 / 1.32, while the fit at the pivot hardly changed (dlib-lpips 0.343 without, 0.360 with).

    import facelab as fl, facelab.pti as pti
    G = fl.load_generator("world64")
    res = pti.tune(G, photo)                  # photo [N, 3, 64, 64] in [-1, 1]
    res.reconstruct()                         # [N, 3, 64, 64] from the tuned generator
    res.G.synthesis(edited_ws, noise_mode="const")
    res.save("me.pti.pt"); res2 = pti.load_pti("me.pti.pt", G)
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .hub import atomic_torch_save, check_state, load_file
from .imaging import check_image_values, resize
from .nets.stylegan2 import NOISE_MODES
from .utils import check_finite, check_loss

PTI_FORMAT = "facelab.pti/1"
# Tune a channels-last copy on the CPU: a whole tuning step took about 14 % less CPU time that way
# (231 vs 268 ms, one thread, torch 2.14 / oneDNN); the result is converted back to contiguous.
_CHANNELS_LAST_ON_CPU = True
HISTORY_KEYS = ("loss", "pixel", "perceptual", "locality")

# calibrate_threshold(load_generator("world64")) with the default dlib-lpips distance: the median
# over 64 faces (psi 1, const noise) x 4 one-pixel shifts is 0.320 (z seed 0) and 0.324 (seed 1);
# a 2 px shift gives 0.84. See the module docstring.
EARLY_STOP_DLIB = 0.32


@dataclass
class PTIConfig:
    """Hyperparameters of :func:`tune`; the defaults are the official PTI values except ``pivot_lr``
    and ``early_stop``, which are re-derived for the embedded world (see the module doc).

    pivot_steps, pivot_lr: W projection (``facelab.invert.project``) steps and initial learning rate.
    tune_steps, lr: maximum pivotal-tuning steps and Adam's learning rate (betas (0.9, 0.999)).
    pixel_weight, perceptual_weight: weights of the pixel MSE and the perceptual distance at the pivot.
    early_stop: stop once every image's perceptual distance at its pivot is <= this (None: never).
        In the units of the perceptual distance used; the default is calibrated for facelab's
        "dlib-lpips" (:func:`calibrate_threshold`); the paper's 0.06 is LPIPS-AlexNet.
    locality: use the locality regulariser; latent_ball_psi: truncation of its ``w_z`` samples;
    alpha: distance of ``w_r`` from the pivot along ``w_z - w_p`` (norm over the whole W+ latent);
    locality_l2_weight, locality_perceptual_weight: its MSE and perceptual weights;
    locality_every: compute it every this many steps; locality_samples: ``w_r`` per pivot per step.
    noise_mode: how the tuned images at the pivot are rendered ("const": G's stored noise maps);
    locality_noise_mode: how the regulariser's images are rendered ("none", as the official code).
    seed: seeds the projection and the regulariser's ``z`` draws (on the CPU: the same on any device).
    device: where to tune (None: the generator's device).
    """

    pivot_steps: int = 450
    pivot_lr: float = 0.1  # the StyleGAN2 projector's; the official PTI repo uses 0.01 (module doc)
    tune_steps: int = 350
    lr: float = 3e-4
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    early_stop: float | None = EARLY_STOP_DLIB
    locality: bool = True
    latent_ball_psi: float = 0.5
    alpha: float = 30.0
    locality_l2_weight: float = 0.1
    locality_perceptual_weight: float = 0.1
    locality_every: int = 1
    locality_samples: int = 1
    noise_mode: str = "const"
    locality_noise_mode: str = "none"
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        for name in ("pivot_steps", "tune_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"PTIConfig.{name} must be an int >= 0, got {v!r}")
        for name in ("locality_every", "locality_samples"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"PTIConfig.{name} must be an int >= 1, got {v!r}")
        for name in ("pivot_lr", "lr", "pixel_weight", "perceptual_weight", "alpha", "locality_l2_weight",
                     "locality_perceptual_weight", "latent_ball_psi"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"PTIConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.pixel_weight == 0 and self.perceptual_weight == 0:
            raise ValueError("PTIConfig: pixel_weight and perceptual_weight are both 0: nothing ties G to the image")
        if self.early_stop is not None and not (isinstance(self.early_stop, (int, float))
                                                and not math.isnan(self.early_stop)):
            raise ValueError(f"PTIConfig.early_stop must be a number or None, got {self.early_stop!r}")
        for name in ("noise_mode", "locality_noise_mode"):
            if getattr(self, name) not in NOISE_MODES:
                raise ValueError(f"PTIConfig.{name} must be one of {NOISE_MODES}, got {getattr(self, name)!r}")
        if self.device is not None:
            self.device = str(self.device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PTIConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------------------------
# Result


@dataclass
class PTIResult:
    """What :func:`tune` returns.

    G: the tuned generator (a copy; eval mode, no gradients). pivots: ``[N, num_ws, w_dim]``.
    history: per tuning step (before its update) batch means of ``loss``, ``pixel`` (MSE at the
    pivots), ``perceptual`` and ``locality`` (the weighted regulariser, NaN on steps without it),
    plus ``perceptual_max`` (the worst image, what early stop compares). steps_run: Adam updates
    made (< ``tune_steps`` when early stop triggered; the history then has one more entry, the
    step whose loss fell below the threshold and was not applied). seconds: the whole call;
    pivot_seconds / tune_seconds: its two phases.
    """

    G: nn.Module
    pivots: torch.Tensor
    config: PTIConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    steps_run: int = 0
    seconds: float = 0.0
    pivot_seconds: float = 0.0
    tune_seconds: float = 0.0

    def __len__(self) -> int:
        return self.pivots.shape[0]

    @property
    def stopped_early(self) -> bool:
        return self.steps_run < self.config.tune_steps

    def reconstruct(self, ws: torch.Tensor | None = None) -> torch.Tensor:
        """Render ``ws`` (default: the pivots; e.g. edited pivots) with the tuned generator.

        ws: W ``[N, w_dim]`` or W+ ``[N, num_ws, w_dim]``. Returns images ``[N, 3, R, R]`` in about
        [-1, 1], rendered with ``config.noise_mode`` (as during tuning), without gradients.
        """
        ws = self.pivots if ws is None else ws
        with torch.no_grad():
            return self.G.synthesis(ws.to(_device_of(self.G)), noise_mode=self.config.noise_mode)

    def save(self, path: str | Path) -> Path:
        """Write ``{"format", "state_dict", "pivots", "config", "history", ...}`` atomically.

        Only the tuned tensors (the synthesis parameters) are stored, plus the generator's
        architecture and a fingerprint of everything that was not tuned, so :func:`load_pti` can
        rebuild the generator on a copy of the same base generator and refuse another one.
        """
        state = {k: v.detach().float().cpu().clone() for k, v in self.G.synthesis.named_parameters()}
        return atomic_torch_save({
            "format": PTI_FORMAT,
            "generator_config": self.G.cfg.to_dict(),
            "base_fingerprint": _fingerprint(self.G),
            "state_dict": state,
            "pivots": self.pivots.detach().float().cpu().clone(),
            "config": self.config.to_dict(),
            "history": {k: [float(x) for x in v] for k, v in self.history.items()},
            "steps_run": int(self.steps_run),
            "seconds": float(self.seconds),
            "pivot_seconds": float(self.pivot_seconds),
            "tune_seconds": float(self.tune_seconds),
        }, path)


def load_pti(path: str | Path, G_base: nn.Module, *, device=None) -> PTIResult:
    """Load a :meth:`PTIResult.save` file onto a copy of ``G_base`` (which is not modified).

    ``G_base`` must be the generator the file was tuned from (same architecture and the same
    untuned weights). Loaded with ``weights_only=True``: no code from the file runs.
    Returns a :class:`PTIResult` on ``device`` (default: G_base's device).
    """
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != PTI_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a facelab PTI file (format {got!r}, expected {PTI_FORMAT!r}); "
                         "write one with facelab.pti.tune(...).save(path)")
    missing = sorted({"generator_config", "base_fingerprint", "state_dict", "pivots", "config", "history",
                      "steps_run", "seconds"} - set(ckpt))
    if missing:
        raise ValueError(f"{path} is an incomplete facelab PTI file (missing {missing}); save it again")
    cfg = getattr(G_base, "cfg", None)
    if cfg is None or ckpt["generator_config"] != cfg.to_dict():
        diff = sorted(k for k, v in ckpt["generator_config"].items() if cfg is None or cfg.to_dict().get(k) != v)
        raise ValueError(f"{path} was tuned from a generator with another architecture (differs in {diff}); "
                         "pass the base generator it was tuned from")
    if ckpt["base_fingerprint"] != _fingerprint(G_base):
        raise ValueError(f"{path} was tuned from a generator with other mapping weights or noise maps than "
                         "G_base; pass the base generator it was tuned from")
    fix = "pass the base generator it was tuned from, or tune and save again"
    check_state(dict(G_base.synthesis.named_parameters()), ckpt["state_dict"], path, fix=fix)
    pivots, shape = ckpt["pivots"], (G_base.num_ws, G_base.w_dim)
    if not (isinstance(pivots, torch.Tensor) and pivots.ndim == 3 and pivots.shape[1:] == shape):
        raise ValueError(f"{path}: its pivots are {list(getattr(pivots, 'shape', [type(pivots).__name__]))}, not "
                         f"[N, {G_base.num_ws}, {G_base.w_dim}]; {fix}")
    check_finite(pivots, f"the pivots of {path}", fix=fix)
    dev = torch.device(device) if device is not None else _device_of(G_base)
    G = copy.deepcopy(G_base).to(dev)
    with torch.no_grad():
        for k, p in G.synthesis.named_parameters():
            p.copy_(ckpt["state_dict"][k])
    G.eval().requires_grad_(False)
    return PTIResult(G=G, pivots=pivots.to(dev), config=PTIConfig.from_dict(ckpt["config"]),
                     history={k: list(v) for k, v in ckpt["history"].items()}, steps_run=ckpt["steps_run"],
                     seconds=ckpt["seconds"], pivot_seconds=ckpt.get("pivot_seconds", 0.0),
                     tune_seconds=ckpt.get("tune_seconds", 0.0))


def _device_of(G: nn.Module) -> torch.device:
    return G.mapping.w_avg.device


def _fingerprint(G: nn.Module) -> str:
    """sha256 of everything PTI leaves untouched: mapping weights and all buffers (CPU float32)."""
    tuned = {f"synthesis.{k}" for k, _ in G.synthesis.named_parameters()}
    h = hashlib.sha256()
    for k, v in sorted(G.state_dict().items()):
        if k not in tuned:
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Checks


def _check_images(images, G) -> torch.Tensor:
    c = G.img_channels
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a float tensor [N, {c}, H, W] in [-1, 1], got "
                        f"{type(images).__name__ if not isinstance(images, torch.Tensor) else images.dtype}; "
                        "convert photos with facelab.to_tensor")
    if images.ndim != 4 or images.shape[1] != c or images.shape[0] < 1 or images.shape[2] != images.shape[3]:
        hint = " (add the batch axis: x[None])" if images.ndim == 3 else ""
        raise ValueError(f"images must be square [N, {c}, H, W] in [-1, 1], got {list(images.shape)}{hint}")
    check_image_values(images)  # generated faces overshoot [-1, 1] a little
    return images


def _check_pivots(pivots, n: int, G) -> torch.Tensor:
    """W [N, w_dim], W+ [N, num_ws, w_dim] or a Projection -> [N, num_ws, w_dim] float32, detached."""
    if hasattr(pivots, "ws") and not isinstance(pivots, torch.Tensor):  # a facelab.invert.Projection
        pivots = pivots.ws
    if not isinstance(pivots, torch.Tensor):
        raise TypeError(f"pivots must be a latent tensor or a Projection, got {type(pivots).__name__}")
    w_dim, num_ws = G.w_dim, G.num_ws
    p = pivots.detach().float()
    check_finite(p, "pivots", fix="pass finite latents (e.g. a facelab.invert.project result) or pivots=None")
    if p.ndim == 2 and p.shape[1] == w_dim:
        p = p.unsqueeze(1).expand(-1, num_ws, -1)
    if p.ndim != 3 or p.shape[1:] != (num_ws, w_dim) or p.shape[0] != n:
        raise ValueError(f"pivots must be W [{n}, {w_dim}] or W+ [{n}, {num_ws}, {w_dim}] (one per image), "
                         f"got {list(pivots.shape)}")
    return p.clone()


def _resolve_perceptual(perceptual, device):
    if perceptual is None:
        from .metrics import PerceptualDistance  # lazy: the dlib network loads only when needed
        perceptual = PerceptualDistance(device=device)
    if isinstance(perceptual, nn.Module):
        perceptual = perceptual.to(device).eval()
    if not callable(perceptual):
        raise TypeError(f"perceptual must be a callable (a, b) -> [N] distances, got {type(perceptual).__name__}")
    return perceptual


def _distance(perceptual, a, b) -> torch.Tensor:
    d = perceptual(a, b)
    if not (isinstance(d, torch.Tensor) and d.shape == (a.shape[0],)):
        raise ValueError(f"perceptual(a, b) must return one distance per image [{a.shape[0]}], "
                         f"got {getattr(d, 'shape', type(d).__name__)}")
    return d


class _Against:
    """``perceptual(a, b)`` where ``b`` are fixed references (no gradient reaches them).

    ``refs(b)`` prepares references once; ``dist(a, refs)`` -> ``[N]``. For any callable the
    references are just the detached images. For facelab's default distance
    (``PerceptualDistance("dlib", align="world")``) they are its unit-normalised features, computed
    once under ``no_grad``: the tuning target is embedded once instead of at every step, and no
    backward pass runs through the reference half of the batch. Same numbers as the module's
    ``forward`` (``tests/test_pti.py`` checks the parity); 25-40 % less perceptual work per step.
    """

    def __init__(self, perceptual):
        self.perceptual = perceptual
        self.net = None
        try:
            from .metrics import PerceptualDistance
        except ImportError:  # pragma: no cover - metrics always ships with facelab
            return
        if isinstance(perceptual, PerceptualDistance) and perceptual.backend == "dlib":
            self.net = perceptual.net

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.perceptual.features(x)

    def refs(self, b: torch.Tensor):
        if self.net is None:
            return b.detach()
        with torch.no_grad():
            return self._features(b.detach())

    @staticmethod
    def cat(r1, r2):
        if isinstance(r1, torch.Tensor):
            return torch.cat([r1, r2])
        return [torch.cat([x, y]) for x, y in zip(r1, r2)]

    def dist(self, a: torch.Tensor, refs) -> torch.Tensor:
        if self.net is None:
            return _distance(self.perceptual, a, refs)
        return self.perceptual.from_features(self._features(a), refs)


def _mse(a, b) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(1)  # [N]


def _w_samples(G, n: int, psi: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` latents ``mapping(z, psi)`` [n, num_ws, w_dim], z drawn on the CPU from ``gen``."""
    z = torch.randn(n, G.z_dim, generator=gen).to(_device_of(G))
    with torch.no_grad():
        return G.mapping(z, truncation_psi=psi, update_w_avg=False)


def _noise_maps(G, n: int, mode: str, device) -> list[torch.Tensor]:
    """Explicit per-layer noise maps [n, 1, r, r] equal to what ``noise_mode=mode`` renders."""
    out = []
    for layer in G.synthesis.layers():
        r = layer.resolution
        if mode == "const":
            out.append(layer.noise_const.view(1, 1, r, r).expand(n, 1, r, r))
        elif mode == "none":
            out.append(torch.zeros(n, 1, r, r, device=device))
        else:
            out.append(torch.randn(n, 1, r, r, device=device))
    return out


def ball_latents(pivots: torch.Tensor, w_z: torch.Tensor, alpha: float) -> torch.Tensor:
    """``w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||``: points at distance ``alpha`` from each pivot.

    pivots: ``[N, num_ws, w_dim]``; w_z: ``[N * k, num_ws, w_dim]`` (k samples per pivot, pivot-major).
    The norm is taken over each whole ``[num_ws, w_dim]`` latent. Returns ``[N * k, num_ws, w_dim]``.
    """
    k = w_z.shape[0] // pivots.shape[0]
    w_p = pivots.repeat_interleave(k, dim=0)  # [N*k, num_ws, w_dim]
    d = w_z - w_p
    norm = d.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
    return w_p + alpha * d / norm


# ---------------------------------------------------------------------------------------------
# Pivotal tuning


def tune(G: nn.Module, images: torch.Tensor, *, config: PTIConfig | None = None, pivots=None,
         perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
         progress: bool = True) -> PTIResult:
    """Pivotal Tuning Inversion of ``images`` [N, 3, H, W] in [-1, 1] (resized to G's resolution).

    G: a facelab ``Generator``; never modified (parameters, buffers, requires_grad flags and
    train/eval mode stay as they are). The tuned generator is a copy, returned in the result.
    config: :class:`PTIConfig` (default: the paper's values).
    pivots: skip the W projection and tune around these latents: W ``[N, w_dim]``, W+
    ``[N, num_ws, w_dim]`` or a :class:`facelab.invert.Projection`.
    perceptual: a callable ``(a, b) -> [N]`` distances of image batches in [-1, 1], used for the
    projection, the tuning loss and the regulariser (default: :class:`facelab.metrics.PerceptualDistance`).
    With ``perceptual_weight == 0`` and ``locality_perceptual_weight == 0`` it is still used for
    early stop when ``early_stop`` is set.
    progress: tqdm progress bars.

    With several images: one generator tuned on the mean loss over all of them (paper Sec. 3.4).
    Returns a :class:`PTIResult`.
    """
    t0 = time.perf_counter()
    config = PTIConfig() if config is None else config
    if not isinstance(config, PTIConfig):
        raise TypeError(f"config must be a PTIConfig, got {type(config).__name__}")
    images = _check_images(images, G)
    n = images.shape[0]
    if pivots is not None:
        pivots = _check_pivots(pivots, n, G)

    device = _device_of(G) if config.device is None else torch.device(config.device)
    # The frozen reference theta_0: the caller's generator itself when it already lives on `device`
    # (only ever run under no_grad, its mapping with update_w_avg=False: nothing of it changes).
    G_ref = G if _device_of(G) == device else copy.deepcopy(G).to(device)
    target = resize(images.detach().to(device, torch.float32), G.img_resolution)  # [N, C, R, R]
    k = config.locality_samples
    use_locality = config.locality and (config.locality_l2_weight > 0 or config.locality_perceptual_weight > 0)
    need_d = config.perceptual_weight > 0 or config.early_stop is not None
    if pivots is None and config.pivot_steps < 1:
        raise ValueError("PTIConfig.pivot_steps is 0 and no pivots were given; pass pivots=... (e.g. a "
                         "facelab.invert.project(...) result) or set pivot_steps >= 1")
    if pivots is None or need_d or (use_locality and config.locality_perceptual_weight > 0):
        perceptual = _resolve_perceptual(perceptual, device)

    # 1. Pivots: W projection.
    if pivots is None:
        from .invert import project
        proj = project(G_ref, target, space="w", steps=config.pivot_steps, lr=config.pivot_lr,
                       perceptual=perceptual, seed=config.seed, progress=progress)
        pivots = proj.ws.detach().float()
    pivots = pivots.to(device)  # [N, num_ws, w_dim]
    t1 = time.perf_counter()

    # 2. Pivotal tuning of a copy of the synthesis network.
    G_t = copy.deepcopy(G).to(device).eval().requires_grad_(False)
    channels_last = device.type == "cpu" and _CHANNELS_LAST_ON_CPU
    if channels_last:  # the same numbers (to float rounding), fewer layout conversions in oneDNN's convolutions
        G_t = G_t.to(memory_format=torch.channels_last)
    params = list(G_t.synthesis.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(int(config.seed))
    against = _Against(perceptual)
    target_refs = against.refs(target) if need_d else None
    pivot_noise = _noise_maps(G_t, n, config.noise_mode, device) if config.noise_mode != "random" else None

    history = {key: [] for key in (*HISTORY_KEYS, "perceptual_max")}
    bar = None
    if progress and config.tune_steps > 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.tune_steps, desc="pivotal tuning", leave=False)
    steps_run = 0
    for step in range(config.tune_steps):
        regularise = use_locality and step % config.locality_every == 0
        ws, noise = pivots, pivot_noise or _noise_maps(G_t, n, config.noise_mode, device)
        if regularise:
            # The regulariser's latents ride in the same batch as the pivots (one forward/backward
            # through the tuned network); theta_0 renders them under no_grad.
            w_z = _w_samples(G_ref, n * k, config.latent_ball_psi, gen)  # [N*k, num_ws, w_dim]
            w_r = ball_latents(pivots, w_z, config.alpha)
            r_noise = _noise_maps(G_t, n * k, config.locality_noise_mode, device)
            with torch.no_grad():
                old = G_ref.synthesis(w_r, noise=r_noise)  # theta_0: [N*k, C, R, R]
            ws = torch.cat([pivots, w_r])
            noise = [torch.cat([a, b]) for a, b in zip(noise, r_noise)]
        out = G_t.synthesis(ws, noise=noise)  # [N (+ N*k), C, R, R]
        img = out[:n]
        pixel = _mse(img, target)  # [N]
        d_all = None
        if regularise and config.locality_perceptual_weight > 0:
            refs = against.cat(target_refs, against.refs(old)) if need_d else against.refs(old)
            d_all = against.dist(out if need_d else out[n:], refs)
            d, d_reg = (d_all[:n], d_all[n:]) if need_d else (None, d_all)
        elif need_d:
            d = against.dist(img, target_refs)
        if not need_d:
            d = torch.full_like(pixel, float("nan"))
        loss = config.pixel_weight * pixel.mean()
        if config.perceptual_weight > 0:
            loss = loss + config.perceptual_weight * d.mean()
        history["pixel"].append(float(pixel.detach().mean()))
        history["perceptual"].append(float(d.detach().mean()))
        d_max = float(d.detach().max())
        history["perceptual_max"].append(d_max)
        if config.early_stop is not None and d_max <= config.early_stop:
            # Checked before the update, as the official coach does: this step's loss is not applied.
            history["loss"].append(float(loss.detach()))
            history["locality"].append(float("nan"))
            break
        reg = None
        if regularise:
            reg = config.locality_l2_weight * _mse(out[n:], old).mean()
            if config.locality_perceptual_weight > 0:
                reg = reg + config.locality_perceptual_weight * d_reg.mean()
            loss = loss + reg
        history["loss"].append(float(loss.detach()))
        history["locality"].append(float(reg.detach()) if reg is not None else float("nan"))
        check_loss(history["loss"][-1], step, "pivotal tuning", f"lower PTIConfig.lr (now {config.lr:g})")

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps_run += 1
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", d=f"{history['perceptual'][-1]:.4g}")
    if bar is not None:
        bar.close()

    G_t.eval().requires_grad_(False)
    if channels_last:
        G_t = G_t.to(memory_format=torch.contiguous_format)
    t2 = time.perf_counter()
    return PTIResult(G=G_t, pivots=pivots, config=config, history=history, steps_run=steps_run,
                     seconds=t2 - t0, pivot_seconds=t1 - t0, tune_seconds=t2 - t1)


# ---------------------------------------------------------------------------------------------
# Measuring: how local is the change, and what the thresholds mean


@dataclass
class LocalityChange:
    """How much a tuned generator's output moved, from :func:`locality_change`.

    random_*: at ``n`` random latents ``mapping(z, psi)`` (far from the pivots);
    near_*: at ``n`` neighbours of each pivot, ``pivot + radius * unit(w - pivot)`` for random ``w``.
    *_mse: mean per-image MSE between the two generators' images; *_perceptual: mean perceptual
    distance between them (0 = unchanged).
    """

    random_mse: float
    random_perceptual: float
    near_mse: float
    near_perceptual: float
    n: int
    psi: float
    radius: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def locality_change(G_orig: nn.Module, G_tuned: nn.Module, pivots: torch.Tensor, *, n: int = 16, psi: float = 1.0,
                    radius: float = 10.0, perceptual=None, seed: int = 0, noise_mode: str = "const",
                    batch: int = 32) -> LocalityChange:
    """Measure how much tuning changed the generator away from the pivots.

    G_orig, G_tuned: the generator before and after :func:`tune` (same architecture).
    pivots: ``[N, num_ws, w_dim]`` or ``[N, w_dim]`` (e.g. ``result.pivots``).
    n: random latents, and neighbours per pivot; psi: their truncation (1 = the whole of W, 0.7 the
    usual "nice faces"); radius: the neighbours' distance from the pivot, in the units of
    :attr:`PTIConfig.alpha` (the norm over the whole W+ latent). perceptual: ``(a, b) -> [N]``
    (default :class:`facelab.metrics.PerceptualDistance`). Both generators render with
    ``noise_mode``; latents are drawn on the CPU from ``seed``.
    Returns a :class:`LocalityChange` (means over the latents).
    """
    device = _device_of(G_tuned)
    pivots = pivots.detach().float().to(device)
    if pivots.ndim == 2:
        pivots = pivots.unsqueeze(1).expand(-1, G_tuned.num_ws, -1)
    perceptual = _resolve_perceptual(perceptual, device)
    G_o = G_orig if _device_of(G_orig) == device else copy.deepcopy(G_orig).to(device)
    gen = torch.Generator().manual_seed(int(seed))
    w_rand = _w_samples(G_o, n, psi, gen)  # [n, num_ws, w_dim]
    w_near = ball_latents(pivots, _w_samples(G_o, n * pivots.shape[0], psi, gen), radius)  # [N*n, ...]

    def compare(ws):
        mses, ds = [], []
        for chunk in ws.split(batch):
            a = G_o.synthesis(chunk, noise_mode=noise_mode)
            b = G_tuned.synthesis(chunk, noise_mode=noise_mode)
            mses.append(_mse(a, b))
            ds.append(_distance(perceptual, b, a))
        return float(torch.cat(mses).mean()), float(torch.cat(ds).mean())

    rm, rp = compare(w_rand)
    nm, np_ = compare(w_near)
    return LocalityChange(random_mse=rm, random_perceptual=rp, near_mse=nm, near_perceptual=np_, n=n, psi=psi,
                          radius=radius)


@torch.no_grad()
def locality_scale(G: nn.Module, *, n: int = 200, psi: float = 0.5, seed: int = 0) -> float:
    """Median distance ``||w_z - w_p||`` (over the whole W+ latent) from a ``psi``-truncated sample
    ``w_z`` to an untruncated one ``w_p`` (standing in for a pivot): the scale that ``alpha`` is
    measured against. About 22 for world64 (alpha = 30 lands just beyond ``w_z``)."""
    gen = torch.Generator().manual_seed(int(seed))
    w_p = _w_samples(G, n, 1.0, gen)
    w_z = _w_samples(G, n, psi, gen)
    return float((w_z - w_p).flatten(1).norm(dim=1).median())


def shift_image(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move the content of ``x`` [N, C, H, W] by ``dx`` px right and ``dy`` px down; edges repeat."""
    h, w = x.shape[-2:]
    p = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)), mode="replicate")  # out[i, j] = x[i - dy, j - dx]
    return p[..., abs(dy) - dy: abs(dy) - dy + h, abs(dx) - dx: abs(dx) - dx + w]


@torch.no_grad()
def calibrate_threshold(G: nn.Module | None = None, *, images: torch.Tensor | None = None, perceptual=None,
                        n: int = 64, shift: int = 1, psi: float = 1.0, seed: int = 0, device=None) -> float:
    """An early-stop threshold in the units of ``perceptual``: the distance of an invisible change.

    The median, over faces and the four one-``shift`` translations (right, left, down, up; the edge
    repeats), of ``perceptual(face, shifted face)``. Faces: ``images`` [N, 3, H, W] in [-1, 1],
    or ``n`` faces of ``G`` (``mapping(z, psi)``, z seeded by ``seed``, const noise).
    ``perceptual`` defaults to :class:`facelab.metrics.PerceptualDistance`.

    Why: the paper stops tuning at LPIPS-AlexNet 0.06, a level where the reconstruction is
    visually indistinguishable from the photo; no mapping from LPIPS-AlexNet to another metric
    exists, so the same idea is restated in the metric at hand: stop when the reconstruction is as
    close to the photo as the photo is to itself moved by one pixel.
    """
    if images is None:
        if G is None:
            raise ValueError("calibrate_threshold needs a generator G or images")
        dev = _device_of(G)
        gen = torch.Generator().manual_seed(int(seed))
        images = torch.cat([G.synthesis(w, noise_mode="const") for w in _w_samples(G, n, psi, gen).split(32)])
    else:
        dev = torch.device(device) if device is not None else images.device
        images = images.to(dev)
    perceptual = _resolve_perceptual(perceptual, dev)
    images = images.float().clamp(-1, 1)
    ds = []
    for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
        moved = shift_image(images, dx, dy)
        ds.append(torch.cat([_distance(perceptual, a, b) for a, b in zip(images.split(32), moved.split(32))]))
    return float(torch.cat(ds).median())


__all__ = ["EARLY_STOP_DLIB", "LocalityChange", "PTIConfig", "PTIResult", "ball_latents", "calibrate_threshold",
           "load_pti", "locality_change", "locality_scale", "shift_image", "tune"]
