"""Pivotal Tuning Inversion (PTI): fine-tune the generator around an inverted latent.

Roich, Mokady, Bermano, Cohen-Or. "Pivotal Tuning for Latent-based Editing of Real Images",
ACM TOG 2022 (arXiv:2106.05744, 2021); official code ``github.com/danielroich/PTI``.

A W inversion of a real photo edits well but looks like someone else (the distortion-editability
tradeoff, notebook 02). PTI keeps the editable latent and moves the *generator* instead:

1. **Pivot.** Invert each image into W with the StyleGAN2 projector (:func:`facelab.projector.project`,
   ``space="w"``, configured by ``PTIConfig.pivot``, a :class:`facelab.projector.ProjectConfig`:
   450 steps): ``w_p``. Or pass ``pivots=`` (any inversion, e.g. a ``Projection``).
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
``criteria/localitly_regulizer.py``) where the paper is silent. The numbers behind them were
measured on the embedded world and are in ``docs/world64/pti.md``; the speed of PTI is measured by
``bench/pti.py``.

* **What is tuned.** The official coach gives Adam *all* of G's parameters, but the loss only
  passes through ``G.synthesis`` (the pivots are fixed latents; the regulariser maps ``z`` with
  the *original* mapping), so the mapping network never receives a gradient and Adam leaves it
  alone. Here exactly the synthesis parameters are tuned (convolution weights, biases, the 4x4
  constant, the style affines, the toRGB layers and the noise strengths) and the mapping network
  and all buffers (``w_avg``, ``noise_const``) are copied unchanged. Same result, stated plainly.
* **Noise.** The official W projector optimises noise maps on a *copy* of G and throws them away;
  tuning renders with G's stored constant noise. So do we: only the projection's ``ws`` are used.
* **Pivot learning rate.** The official PTI projector keeps the StyleGAN2-ADA projector's
  schedule but lowers its initial learning rate from 0.1 to 0.01. In world64, 450 steps at 0.01
  stop short (a worse pivot, measured on a photo and a world face), so ``pivot_lr`` defaults to
  the StyleGAN2 projector's own 0.1. Two more differences come with facelab's projector
  (:mod:`facelab.projector`): it steps in W's whitened coordinates, its one change, and it
  estimates W's mean (and the covariance that whitening needs) from 10 000 mapped ``z``, where the
  official PTI projector takes the mean of 600. The official projector is
  ``pivot={"lr": 0.01, "whiten": False, "w_avg_samples": 600}``.
* **Several images** (paper Sec. 3.4, "multiple identities"): one generator, one pivot per image,
  and the loss of a step is the mean over the images (the paper's formulation). The official
  multi-ID coach instead takes one Adam step per image in turn (N updates per "step"); batching
  them is the paper's equation, N times fewer updates, and as fast as one image on a GPU. Each
  image gets its own ``locality_samples`` regulariser latents around its own pivot. Early stop
  waits for the *worst* image (the official multi-ID coach has none).
* **Locality default.** The official ``use_locality_regularization`` is ``False``; the paper
  presents it as part of the method, and facelab turns it on (``locality=False`` reproduces the
  official default).
* **alpha = 30** is measured in the official W space (18 x 512). In world64 (10 x 128) it lands
  ``w_r`` a little beyond the sample ``w_z``, still a plausible latent; re-measure the scale for
  another generator with :func:`locality_scale`.

**Early-stop threshold.** The paper's 0.06 is in LPIPS-AlexNet units and means nothing for
another metric. facelab's default distance is the "dlib-lpips" of :mod:`facelab.metrics`, so the
threshold is re-derived with :func:`calibrate_threshold`: the median perceptual distance between a
world face and the same face shifted by one pixel (horizontally or vertically, edge repeated) --
a difference nobody sees side by side, i.e. "the reconstruction is as close to the photo as the
photo is to itself, one pixel off". ``EARLY_STOP_DLIB`` stores the calibrated value; pass
``early_stop=None`` to always run ``tune_steps``, or recalibrate for another ``perceptual``. It
ends the tuning of in-domain faces early and lets real photos use most of the budget, as 0.06
does at 1024 px.

**Speed.** ``bench/pti.py`` measures PTI's time and the least time its arithmetic could take
(``docs/world64/pti.md``): on a CPU the paper's step counts are slow, so interactive PTI needs a
GPU (``PTIConfig(device="cuda")``, or a generator on the GPU). :func:`locality_change` measures what
the regulariser buys.

    import facelab as fl, facelab.pti as pti
    G = fl.load_generator("world64")
    res = pti.tune(G, photo)                  # photo [N, 3, 64, 64] in [-1, 1]
    res.reconstruct()                         # [N, 3, 64, 64] from the tuned generator
    res.G.synthesis(edited_ws, noise_mode="const")
    res.save("me.pti.pt"); res2 = pti.load_pti("me.pti.pt", G)
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .hub import REGISTRY, atomic_torch_save, check_state, load_encoder, load_file
from .imaging import check_images, resize
from .latents import as_wplus, noise_maps, sample_ws
from .metrics import ReferenceDistance, checked_distance, generator_crop, mse, resolve_perceptual
from .nets.stylegan2 import NOISE_MODES
from .projector import ProjectConfig, project
from .utils import Config, check_finite, check_loss, configured, device_of, get_device, on_device

PTI_FORMAT = "facelab.pti/1"
# Tune a channels-last copy on the CPU: the same numbers (to float rounding) with fewer layout
# conversions in oneDNN's convolutions (measured in docs/world64/pti.md); converted back afterwards.
CHANNELS_LAST_ON_CPU = True
HISTORY_KEYS = ("loss", "pixel", "perceptual", "locality")

# calibrate_threshold(load_generator("world64")) with the default dlib-lpips distance: the median
# over 64 faces (psi 1, const noise) x 4 one-pixel shifts (docs/world64/pti.md).
EARLY_STOP_DLIB = 0.33
PIVOT = ProjectConfig(steps=450, lr=0.1)  # the pivot's projection: 450 steps (PTI), lr 0.1 (StyleGAN2)


def _whole(v) -> bool:
    """An int and not a bool (True would read as 1 step)."""
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class PTIConfig(Config):
    """Hyperparameters of :func:`tune`; the defaults are the official PTI values except ``pivot_lr``
    and ``early_stop``, which are re-derived for the embedded world, and the pivot projector's
    whitening and W statistics (10 000 samples, not 600), facelab's projector's (see the module doc).

    pivot: the :class:`facelab.projector.ProjectConfig` of the W projection that finds the pivots
        (default 450 steps at lr 0.1, the StyleGAN2 projector's other values); a dict is read as
        changes to that default. pivot_steps, pivot_lr: shorthands for ``pivot.steps`` and
        ``pivot.lr`` (given, they override ``pivot``'s; afterwards they always equal them).
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

    DERIVED = ("pivot_steps", "pivot_lr")

    pivot_steps: int | None = None
    pivot_lr: float | None = None
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
    pivot: ProjectConfig = PIVOT

    def __post_init__(self):
        for name in ("pivot_steps", "tune_steps"):
            v = getattr(self, name)
            if not (v is None and name == "pivot_steps") and not (_whole(v) and v >= 0):
                raise ValueError(f"PTIConfig.{name} must be an int >= 0, got {v!r}")
        for name in ("locality_every", "locality_samples"):
            v = getattr(self, name)
            if not (_whole(v) and v >= 1):
                raise ValueError(f"PTIConfig.{name} must be an int >= 1, got {v!r}")
        if not _whole(self.seed):
            raise ValueError(f"PTIConfig.seed must be an int, got {self.seed!r}")
        for name in ("pivot_lr", "lr", "pixel_weight", "perceptual_weight", "alpha", "locality_l2_weight",
                     "locality_perceptual_weight", "latent_ball_psi"):
            v = getattr(self, name)
            if not (v is None and name == "pivot_lr") and \
                    not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
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
            object.__setattr__(self, "device", str(self.device))
        self._normalise_pivot()

    def _normalise_pivot(self) -> None:
        """``pivot`` as a ProjectConfig with the shorthands applied; the shorthands set from it."""
        pivot = self.pivot
        if isinstance(pivot, Mapping):
            pivot = PIVOT.replace(**pivot)
        if not isinstance(pivot, ProjectConfig):
            raise TypeError(f"PTIConfig.pivot must be a ProjectConfig (or a dict of its fields), got "
                            f"{type(pivot).__name__}")
        shorthands = {k: v for k, v in (("steps", self.pivot_steps), ("lr", self.pivot_lr)) if v is not None}
        pivot = pivot.replace(**shorthands) if shorthands else pivot
        for name, value in (("pivot", pivot), ("pivot_steps", pivot.steps), ("pivot_lr", pivot.lr)):
            object.__setattr__(self, name, value)


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
            return self.G.synthesis(ws.to(device_of(self.G)), noise_mode=self.config.noise_mode)

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
    dev = get_device(device) if device is not None else device_of(G_base)
    G = copy.deepcopy(G_base).to(dev)
    with torch.no_grad():
        for k, p in G.synthesis.named_parameters():
            p.copy_(ckpt["state_dict"][k])
    G.eval().requires_grad_(False)
    return PTIResult(G=G, pivots=pivots.to(dev), config=PTIConfig.from_dict(ckpt["config"]),
                     history={k: list(v) for k, v in ckpt["history"].items()}, steps_run=ckpt["steps_run"],
                     seconds=ckpt["seconds"], pivot_seconds=ckpt.get("pivot_seconds", 0.0),
                     tune_seconds=ckpt.get("tune_seconds", 0.0))


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


def _check_pivots(pivots, n: int, G) -> torch.Tensor:
    """W [N, w_dim], W+ [N, num_ws, w_dim] or a Projection -> [N, num_ws, w_dim] float32, detached."""
    if hasattr(pivots, "ws") and not isinstance(pivots, torch.Tensor):  # a facelab.projector.Projection
        pivots = pivots.ws
    if not isinstance(pivots, torch.Tensor):
        raise TypeError(f"pivots must be a latent tensor or a Projection, got {type(pivots).__name__}")
    p = pivots.detach().float()
    check_finite(p, "pivots", fix="pass finite latents (e.g. a facelab.invert.project result) or pivots=None")
    return as_wplus(p, G, n=n, what="pivots").clone()


# ---------------------------------------------------------------------------------------------
# Pivotal tuning


def encoder_pivots(G: nn.Module, images: torch.Tensor, encoder=None) -> torch.Tensor:
    """W+ pivots ``[N, num_ws, w_dim]`` of ``images`` from an e4e-style encoder (one forward pass).

    encoder: a :class:`facelab.nets.encoder.Encoder`, a weights name or a path; None: the shipped
    encoder of G's world (``encoder_<name>`` for a generator loaded by name, e.g. world64's).
    """
    if encoder is None:
        name = f"encoder_{getattr(G, 'meta', {}).get('name', '')}"
        if name not in REGISTRY:
            raise ValueError("pivots='encoder' needs the world's encoder for this generator: pass "
                             "encoder=world.encoder (build one with `python -m facelab.train.encoder`)")
        encoder = name
    if isinstance(encoder, (str, Path)):
        encoder = load_encoder(encoder, device=device_of(G))
    encoder.check_generator(G)
    with torch.no_grad():
        return encoder(images.to(device_of(encoder), torch.float32)).float()


def tune(G: nn.Module, images: torch.Tensor, *, config: PTIConfig | None = None, pivots=None, encoder=None,
         perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
         progress: bool = True, **hyper) -> PTIResult:
    """Pivotal Tuning Inversion of ``images`` [N, 3, H, W] in [-1, 1] (resized to G's resolution).

    G: a facelab ``Generator``; never modified (parameters, buffers, requires_grad flags and
    train/eval mode stay as they are). The tuned generator is a copy, returned in the result.
    config: :class:`PTIConfig` (default: the paper's values); its fields can also be given as
    keywords, which override it (``tune(G, x, tune_steps=100, device="cuda")``, as :func:`project`).
    pivots: skip the W projection and tune around these latents: W ``[N, w_dim]``, W+
    ``[N, num_ws, w_dim]`` or a :class:`facelab.projector.Projection`; or ``"encoder"``: take them
    from an e4e-style encoder in one pass (:func:`encoder_pivots`; the official PTI code offers
    e4e pivots too), ``encoder`` naming it (None: the shipped encoder of G's world).
    perceptual: a callable ``(a, b) -> [N]`` distances of image batches in [-1, 1], used for the
    projection, the tuning loss and the regulariser (default: :class:`facelab.metrics.PerceptualDistance`).
    With ``perceptual_weight == 0`` and ``locality_perceptual_weight == 0`` it is still used for
    early stop when ``early_stop`` is set.
    progress: tqdm progress bars.

    With several images: one generator tuned on the mean loss over all of them (paper Sec. 3.4).
    Returns a :class:`PTIResult`.
    """
    t0 = time.perf_counter()
    config = configured(PTIConfig, config, hyper, "tune")
    check_images(images, "images", channels=G.img_channels, square=True, nonempty=True)
    n = images.shape[0]
    if isinstance(pivots, str):
        if pivots != "encoder":
            raise ValueError(f"pivots must be latents, a Projection, 'encoder' or None, got {pivots!r}")
        pivots = encoder_pivots(G, resize(images.detach().float(), G.img_resolution), encoder)
    elif encoder is not None:  # it would be ignored, and the pivots projected instead
        raise ValueError("encoder= is used with pivots='encoder' only; pass both to take the pivots from it")
    if pivots is not None:
        pivots = _check_pivots(pivots, n, G)
    if pivots is None and config.pivot_steps < 1:
        raise ValueError("PTIConfig.pivot_steps is 0 and no pivots were given; pass pivots=... (e.g. a "
                         "facelab.invert.project(...) result) or set pivot_steps >= 1")

    device = device_of(G) if config.device is None else get_device(config.device)
    # The frozen reference theta_0: the caller's generator itself when it already lives on `device`
    # (only ever run under no_grad, its mapping with update_w_avg=False: nothing of it changes).
    G_ref = on_device(G, device)
    target = resize(images.detach().to(device, torch.float32), G.img_resolution)  # [N, C, R, R]
    tuner = _Tuner(G, G_ref, target, config, device)
    if pivots is None or tuner.need_d or tuner.locality_d:
        perceptual = resolve_perceptual(perceptual, device, align=generator_crop(G))

    # 1. Pivots: W projection.
    if pivots is None:
        proj = project(G_ref, target, space="w", config=config.pivot, perceptual=perceptual, seed=config.seed,
                       progress=progress)
        pivots = proj.ws.detach().float()
    pivots = pivots.to(device)  # [N, num_ws, w_dim]
    t1 = time.perf_counter()

    # 2. Pivotal tuning of a copy of the synthesis network.
    G_t, history, steps_run = tuner.run(pivots, perceptual, progress)
    t2 = time.perf_counter()
    return PTIResult(G=G_t, pivots=pivots, config=config, history=history, steps_run=steps_run,
                     seconds=t2 - t0, pivot_seconds=t1 - t0, tune_seconds=t2 - t1)


class _Tuner:
    """Pivotal tuning's state and steps: the tuned copy ``G_t``, its optimiser, the references."""

    def __init__(self, G, G_ref, target: torch.Tensor, config: PTIConfig, device: torch.device):
        self.G, self.G_ref, self.target, self.config, self.device = G, G_ref, target, config, device
        self.n, self.k = target.shape[0], config.locality_samples
        self.use_locality = config.locality and (config.locality_l2_weight > 0 or config.locality_perceptual_weight > 0)
        self.locality_d = self.use_locality and config.locality_perceptual_weight > 0
        self.need_d = config.perceptual_weight > 0 or config.early_stop is not None

    def run(self, pivots: torch.Tensor, perceptual, progress: bool) -> tuple[nn.Module, dict, int]:
        """Tune a copy of G around ``pivots``; returns (G_t, history, Adam updates made)."""
        config, device = self.config, self.device
        G_t = copy.deepcopy(self.G).to(device).eval().requires_grad_(False)
        channels_last = device.type == "cpu" and CHANNELS_LAST_ON_CPU
        if channels_last:  # the same numbers (to float rounding), fewer layout conversions in oneDNN's convolutions
            G_t = G_t.to(memory_format=torch.channels_last)
        params = list(G_t.synthesis.parameters())
        for p in params:
            p.requires_grad_(True)
        self.G_t, self.pivots = G_t, pivots
        self.optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
        self.gen = torch.Generator().manual_seed(int(config.seed))
        self.against = ReferenceDistance(perceptual)
        self.target_refs = self.against.refs(self.target) if self.need_d else None
        self.pivot_noise = noise_maps(G_t, self.n, config.noise_mode, device) if config.noise_mode != "random" else None
        self.history = {key: [] for key in (*HISTORY_KEYS, "perceptual_max")}

        bar = None
        if progress and config.tune_steps > 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=config.tune_steps, desc="pivotal tuning", leave=False)
        steps_run = 0
        for step in range(config.tune_steps):
            if not self.step(step):
                break
            steps_run += 1
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{self.history['loss'][-1]:.4g}", d=f"{self.history['perceptual'][-1]:.4g}")
        if bar is not None:
            bar.close()
        G_t.eval().requires_grad_(False)
        if channels_last:
            G_t = G_t.to(memory_format=torch.contiguous_format)
        return G_t, self.history, steps_run

    def batch(self, regularise: bool):
        """(ws, noise, old): the pivots and, when regularising, the regulariser's latents ``w_r``
        riding in the same batch (one forward/backward through the tuned network), with theta_0's
        renders of them ``old`` (under no_grad; else None)."""
        config, n = self.config, self.n
        ws, noise = self.pivots, self.pivot_noise or noise_maps(self.G_t, n, config.noise_mode, self.device)
        if not regularise:
            return ws, noise, None
        w_z = sample_ws(self.G_ref, n * self.k, psi=config.latent_ball_psi, generator=self.gen)  # [N*k, num_ws, w_dim]
        w_r = ball_latents(self.pivots, w_z, config.alpha)
        r_noise = noise_maps(self.G_t, n * self.k, config.locality_noise_mode, self.device)
        with torch.no_grad():
            old = self.G_ref.synthesis(w_r, noise=r_noise)  # theta_0: [N*k, C, R, R]
        return torch.cat([self.pivots, w_r]), [torch.cat([a, b]) for a, b in zip(noise, r_noise)], old

    def distances(self, out: torch.Tensor, old: torch.Tensor | None):
        """(d [N] at the pivots, NaN without a perceptual term; d_reg [N*k] of the regulariser or None)."""
        n, against = self.n, self.against
        d, d_reg = None, None
        if old is not None and self.config.locality_perceptual_weight > 0:
            refs = against.cat(self.target_refs, against.refs(old)) if self.need_d else against.refs(old)
            d_all = against.dist(out if self.need_d else out[n:], refs)
            d, d_reg = (d_all[:n], d_all[n:]) if self.need_d else (None, d_all)
        elif self.need_d:
            d = against.dist(out[:n], self.target_refs)
        if not self.need_d:
            d = torch.full((n,), float("nan"), dtype=out.dtype, device=out.device)
        return d, d_reg

    def step(self, step: int) -> bool:
        """One tuning step; False (and no update) when early stop triggers."""
        config, n, history = self.config, self.n, self.history
        regularise = self.use_locality and step % config.locality_every == 0
        ws, noise, old = self.batch(regularise)
        out = self.G_t.synthesis(ws, noise=noise)  # [N (+ N*k), C, R, R]
        pixel = mse(out[:n], self.target)  # [N]
        d, d_reg = self.distances(out, old)
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
            return False
        reg = None
        if regularise:
            reg = config.locality_l2_weight * mse(out[n:], old).mean()
            if config.locality_perceptual_weight > 0:
                reg = reg + config.locality_perceptual_weight * d_reg.mean()
            loss = loss + reg
        history["loss"].append(float(loss.detach()))
        history["locality"].append(float(reg.detach()) if reg is not None else float("nan"))
        check_loss(history["loss"][-1], step, "pivotal tuning", f"lower PTIConfig.lr (now {config.lr:g})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return True


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
        return dataclasses.asdict(self)


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
    device = device_of(G_tuned)
    pivots = as_wplus(pivots.detach().float().to(device), G_tuned, what="pivots")  # [N, num_ws, w_dim]
    perceptual = resolve_perceptual(perceptual, device, align=generator_crop(G_tuned))
    G_o = on_device(G_orig, device)
    gen = torch.Generator().manual_seed(int(seed))
    w_rand = sample_ws(G_o, n, psi=psi, generator=gen)  # [n, num_ws, w_dim]
    w_near = ball_latents(pivots, sample_ws(G_o, n * pivots.shape[0], psi=psi, generator=gen), radius)  # [N*n, ...]

    def compare(ws):
        mses, ds = [], []
        for chunk in ws.split(batch):
            a = G_o.synthesis(chunk, noise_mode=noise_mode)
            b = G_tuned.synthesis(chunk, noise_mode=noise_mode)
            mses.append(mse(a, b))
            ds.append(checked_distance(perceptual, b, a))
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
    w_p = sample_ws(G, n, psi=1.0, generator=gen)
    w_z = sample_ws(G, n, psi=psi, generator=gen)
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
    or ``n`` faces of ``G`` (``mapping(z, psi)``, z seeded by ``seed``, const noise), on ``device``
    (default: the images' or G's; G is used on a copy there if it lives elsewhere).
    ``perceptual`` defaults to :class:`facelab.metrics.PerceptualDistance`.

    Why: the paper stops tuning at LPIPS-AlexNet 0.06, a level where the reconstruction is
    visually indistinguishable from the photo; no mapping from LPIPS-AlexNet to another metric
    exists, so the same idea is restated in the metric at hand: stop when the reconstruction is as
    close to the photo as the photo is to itself moved by one pixel.
    """
    if images is None:
        if G is None:
            raise ValueError("calibrate_threshold needs a generator G or images")
        dev = device_of(G) if device is None else get_device(device)
        G = on_device(G, dev)
        gen = torch.Generator().manual_seed(int(seed))
        ws = sample_ws(G, n, psi=psi, generator=gen)  # [n, num_ws, w_dim]
        images = torch.cat([G.synthesis(w, noise_mode="const") for w in ws.split(32)])
    else:
        dev = get_device(device) if device is not None else images.device
        images = images.to(dev)
    perceptual = resolve_perceptual(perceptual, dev, align="world" if G is None else generator_crop(G))
    images = images.float().clamp(-1, 1)
    ds = []
    for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
        moved = shift_image(images, dx, dy)
        ds.append(torch.cat([checked_distance(perceptual, a, b) for a, b in zip(images.split(32), moved.split(32))]))
    return float(torch.cat(ds).median())


__all__ = ["EARLY_STOP_DLIB", "LocalityChange", "PTIConfig", "PTIResult", "ball_latents", "calibrate_threshold",
           "encoder_pivots",
           "load_pti", "locality_change", "locality_scale", "shift_image", "tune"]
