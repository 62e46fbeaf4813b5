"""The StyleGAN2 projector: find the latent (and noise maps) from which a generator renders a given image.

Optimisation-based projection as in the StyleGAN2 projector (Karras et al., "Analyzing and Improving
the Image Quality of StyleGAN", CVPR 2020, Sec. 5; the StyleGAN2-ADA ``projector.py``), into
``W`` (one ``w`` per image, broadcast to every layer) or ``W+`` (one ``w`` per layer, Abdal et al.,
"Image2StyleGAN", ICCV 2019), with an optional penalty that pulls the ``W+`` layers together (Tov et
al., "Designing an Encoder for StyleGAN Image Manipulation" (e4e), SIGGRAPH 2021: latents close to
``W`` edit better, latents far from it reconstruct better -- the distortion-editability tradeoff).
It is part of the core because two topic modules use it: :mod:`facelab.invert` (notebook 02)
teaches it, :mod:`facelab.pti` (notebook 03) finds its pivots with it.

For a target image ``x`` (``[N, 3, H, W]`` in [-1, 1]) the projector minimises, per image,

    L = perceptual_weight * d(G(w + n_t), x) + pixel_weight * MSE(G(w + n_t), x)
        + regularize_noise_weight * R_noise + wplus_reg * R_W+

with Adam over ``w`` and the per-layer noise maps, where

* ``w`` starts at the mean of ``W`` (estimated from ``w_avg_samples`` mapped ``z``) or at ``init``;
* ``n_t ~ N(0, (sigma_W * initial_noise_factor * max(0, 1 - t / noise_ramp_length)^2)^2)`` is latent
  noise that fades out over the first ``noise_ramp_length`` of the run (``t`` = step / steps), with
  ``sigma_W = sqrt(E ||w - w_avg||^2)`` (the projector's scalar spread of ``W``);
* the learning rate ramps up linearly over the first ``lr_rampup_length`` and down along a cosine
  over the last ``lr_rampdown_length`` of the run;
* ``R_noise`` is the projector's multi-scale autocorrelation penalty: for each noise map, the squared
  mean product of the map with itself shifted by one pixel (horizontally and vertically), repeated
  on 2x average-pooled maps down to 8x8; after every step each map is renormalised to zero mean and
  unit variance, so the noise cannot smuggle the image in;
* ``R_W+ = mean_l ||w_l - mean_k w_k||^2 / sigma_W^2`` is the mean squared distance of the ``W+``
  layers from their mean, in units of the spread of ``W`` (0 for a ``W`` latent); ``wplus_reg -> inf``
  turns ``W+`` into ``W``. (e4e regularises the offsets from the first layer with an L2 norm; the
  squared distance to the mean is the same idea, smooth at 0 and symmetric in the layers.)

**One change to the projector: whitened coordinates** (``whiten=True``, the default). Adam does not
optimise ``w`` itself but ``u = L^-1 (w - w_avg)``, where ``L L^T`` is the covariance of W (estimated
from the same samples), so a step of the same size moves ``w`` far along the directions W spreads
in and hardly at all along the ones it does not use -- a preconditioner, the loss is unchanged (the
same idea as the PCA-whitened "P_N" space of Zhu et al., "Improved StyleGAN Embedding: Where are
the Good Latents?", 2020). The embedded world's W is very anisotropic, and the plain
parametrisation walks off it: a W projection then lands far from W (Mahalanobis,
:func:`facelab.latents.w_distance`) with a larger pixel error (the measurements are in
``docs/world64/projector.md``). ``whiten=False`` optimises ``w`` directly, as the StyleGAN2-ADA
projector does.

Each target of a batch has its own latent, its own noise maps and its own loss (the batch loss is
the sum), so the images do not interact: Adam works per element, and with one integer ``seed`` every
target draws the same random numbers, so projecting a batch gives the same result as projecting each
image alone (up to floating point).

    proj = project(G, target, space="w+", steps=300)          # or config=ProjectConfig(...)
    proj.ws               # [N, num_ws, w_dim]
    proj.synthesize(G)    # [N, 3, R, R], rendered with the projection's noise maps
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .imaging import check_images, resize
from .latents import WMoments, check_latents, w_moments
from .metrics import ReferenceDistance, generator_crop, resolve_perceptual
from .nets.stylegan2 import float32
from .utils import Config, check_finite, check_loss, configured, device_of, on_device

SPACES = ("w", "w+")
HISTORY_KEYS = ("loss", "perceptual", "pixel", "noise_reg", "wplus_reg")


@dataclass(frozen=True)
class ProjectConfig(Config):
    """Hyperparameters of :func:`project`, with the StyleGAN2-ADA projector's defaults (module doc).

    steps: Adam steps (0 is allowed here, for a config that will not be run, e.g. PTI given pivots;
    :func:`project` needs >= 1). lr: the peak learning rate. w_avg_samples: mapped ``z`` for the
    statistics of W. initial_noise_factor, noise_ramp_length: the latent noise and the fraction of
    the run over which it fades out. lr_rampdown_length, lr_rampup_length: the learning-rate
    schedule's ends. regularize_noise_weight: weight of the noise-map penalty. perceptual_weight,
    pixel_weight: weights of the perceptual distance and the pixel MSE (the projector uses the
    perceptual distance only; with ``perceptual_weight=0`` no perceptual network is built or run).
    wplus_reg: weight of the W+ spread penalty (0 = free W+; ignored for ``space="w"``). whiten:
    optimise in W's whitened coordinates; False = the ADA projector.
    """

    steps: int = 1000
    lr: float = 0.1
    w_avg_samples: int = 10000
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    regularize_noise_weight: float = 1e5
    perceptual_weight: float = 1.0
    pixel_weight: float = 0.0
    wplus_reg: float = 0.0
    whiten: bool = True

    def __post_init__(self):
        if not (isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 0):
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not (isinstance(self.w_avg_samples, int) and self.w_avg_samples >= 2):
            raise ValueError(f"w_avg_samples must be an int >= 2 (W's mean and covariance), got {self.w_avg_samples!r}")
        for name in ("lr", "regularize_noise_weight", "perceptual_weight", "pixel_weight", "wplus_reg",
                     "initial_noise_factor", "noise_ramp_length", "lr_rampdown_length", "lr_rampup_length"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.perceptual_weight == 0 and self.pixel_weight == 0:
            raise ValueError("perceptual_weight and pixel_weight are both 0: nothing ties the latent to the target")

    def latent_noise(self, step: int, w_std: float) -> float:
        """The std of the latent noise added at ``step``: ``w_std * initial_noise_factor *
        max(0, 1 - t / noise_ramp_length)^2`` with ``t = step / steps`` (0 once the ramp is over)."""
        t = step / self.steps
        return w_std * self.initial_noise_factor * max(0.0, 1.0 - t / self.noise_ramp_length) ** 2 \
            if self.noise_ramp_length > 0 else 0.0

    def lr_at(self, step: int) -> float:
        """The learning rate at ``step``: a linear ramp up, then a cosine ramp down at the end."""
        t = step / self.steps
        rampdown, rampup = self.lr_rampdown_length, self.lr_rampup_length
        ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp = ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)
        return self.lr * ramp


@dataclass
class Projection:
    """The result of :func:`project`.

    ws: ``[N, num_ws, w_dim]`` (detached; for ``space="w"`` all rows of a latent are equal).
    w: ``[N, w_dim]`` for ``space="w"``, else None.
    noise: the optimised noise maps, one ``[N, 1, r, r]`` tensor per conv layer (``G.synthesis``'s
    ``noise=`` argument), each normalised to zero mean and unit variance per image.
    history: per-step lists (batch means, before each step's update) of ``loss``, ``perceptual``
    (NaN when not computed), ``pixel`` (MSE, always computed), ``noise_reg``, ``wplus_reg`` and
    ``lr``.
    final: the same loss terms per target (``[N]`` tensors, CPU) for the returned latents and noise,
    without latent noise: the reconstruction's distortion.
    images: the final reconstructions ``[N, 3, R, R]`` when ``return_images=True``.
    steps, seconds: optimisation steps and wall-clock time of the whole call.
    """

    ws: torch.Tensor
    w: torch.Tensor | None
    noise: list[torch.Tensor]
    space: str
    history: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, torch.Tensor] = field(default_factory=dict)
    images: torch.Tensor | None = None
    steps: int = 0
    seconds: float = 0.0

    def __len__(self) -> int:
        return self.ws.shape[0]

    def synthesize(self, G, ws: torch.Tensor | None = None) -> torch.Tensor:
        """Render ``ws`` (default: the projected latents; e.g. an edit of them, same N) with this
        projection's noise maps. Returns images ``[N, 3, R, R]`` (no gradients)."""
        ws = self.ws if ws is None else ws
        if ws.shape[0] != len(self):
            raise ValueError(f"ws holds {ws.shape[0]} latents but the projection has {len(self)} noise sets")
        device = device_of(G)
        with torch.no_grad():
            return G.synthesis(ws.to(device), noise=[nz.to(device) for nz in self.noise])


def noise_regularization(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """The projector's noise penalty, per image: maps ``[N, 1, r, r]`` -> ``[N]``.

    For every map and every scale (the map, then 2x average-pooled copies down to 8x8): the squared
    mean of the map times itself shifted by one pixel, horizontally plus vertically. Zero for white
    noise, large when a map carries image structure (neighbouring pixels correlate).
    """
    reg = 0.0
    for nz in noise:
        x = nz  # [N, 1, r, r]
        while True:
            reg = reg + (x * torch.roll(x, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            reg = reg + (x * torch.roll(x, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return reg  # [N]


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_init(init, space: str, n: int, G) -> torch.Tensor | None:
    """-> [N, 1, w_dim] (W) or [N, num_ws, w_dim] (W+), or None."""
    if init is None:
        return None
    if isinstance(init, Projection):
        init = init.w if (space == "w" and init.w is not None) else init.ws
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be a latent tensor or a Projection, got {type(init).__name__}")
    w_dim, num_ws = G.w_dim, G.num_ws
    x = init.detach().float()
    check_finite(x, "init", fix="start from a finite latent (e.g. a previous Projection) or init=None")
    if x.ndim == 1 and x.shape[0] == w_dim:
        x = x.expand(n, w_dim)
    if space == "w" and x.ndim == 3 and x.shape == (n, num_ws, w_dim):
        raise ValueError("space='w' optimises one w per image, but init is a W+ latent "
                         f"[{n}, {num_ws}, {w_dim}]; pass a W latent [{n}, {w_dim}] (e.g. ws[:, 0]) "
                         "or project with space='w+'")
    x = check_latents(x, G, n=n, what="init")  # [N, 1, w_dim] or [N, num_ws, w_dim]
    if space == "w+":
        x = x.expand(n, num_ws, w_dim)
    return x.clone()


def _seeds(seed, n: int) -> list[int]:
    seeds = [int(seed)] * n if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"seed must be one int or one per target ({n}), got {len(seeds)}")
    return seeds


# ---------------------------------------------------------------------------------------------
# The latent, its parametrisation, and the loss


class _Latent:
    """The optimised latent: ``[N, layers, w_dim]`` (layers = 1 for W), as Adam sees it.

    With ``whiten`` the variable is u = L^-1 (w - w_avg) (Sigma = L L^T, the covariance of W) and
    w = w_avg + L u; otherwise it is w itself.
    """

    def __init__(self, stats: WMoments, start: torch.Tensor, w_avg: torch.Tensor, whiten: bool):
        n, layers, w_dim = start.shape
        self.w_avg = w_avg
        self.chol = None
        if whiten:
            self.chol = stats.chol.float().to(w_avg.device)  # [w_dim, w_dim], lower triangular
            u = torch.linalg.solve_triangular(self.chol, (start - w_avg).reshape(-1, w_dim).T, upper=False).T
            self.var = u.reshape(n, layers, w_dim).clone().requires_grad_(True)
        else:
            self.var = start.clone().requires_grad_(True)

    def __call__(self) -> torch.Tensor:
        if self.chol is None:
            return self.var
        with float32(self.var):  # under a caller's autocast the matmul would round the latent to bf16
            return self.w_avg + self.var @ self.chol.T  # [N, layers, w_dim]


@dataclass
class _Loss:
    """The projector's loss terms, per target ``[N]``, for a batch of targets."""

    G: object
    target: torch.Tensor          # [N, C, R, R]
    distance: Callable | None     # images (at most 256 px) -> [N], or None without a perceptual term
    cfg: ProjectConfig
    w_std: float

    def __call__(self, w_lat, w_render, synth_noise) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Render ``w_render`` [N, layers, w_dim] with ``synth_noise``; the W+ spread penalty acts on
        the latent ``w_lat`` itself, not on its noisy copy."""
        G, cfg = self.G, self.cfg
        n = self.target.shape[0]
        img = G.synthesis(w_render.expand(n, G.num_ws, G.w_dim), noise=synth_noise)  # [N, C, R, R]
        terms = {"pixel": (img - self.target).square().mean(dim=(1, 2, 3))}
        if self.distance is not None:
            terms["perceptual"] = self.distance(_perceptual_input(img))
        else:
            terms["perceptual"] = torch.full((n,), float("nan"), device=img.device)
        terms["noise_reg"] = noise_regularization(synth_noise)
        spread = w_lat - w_lat.mean(1, keepdim=True)  # [N, layers, w_dim]; 0 for W
        terms["wplus_reg"] = spread.square().sum(-1).mean(1) / self.w_std ** 2
        loss = cfg.pixel_weight * terms["pixel"] + cfg.regularize_noise_weight * terms["noise_reg"]
        if cfg.perceptual_weight > 0:
            loss = loss + cfg.perceptual_weight * terms["perceptual"]
        if cfg.wplus_reg > 0:
            loss = loss + cfg.wplus_reg * terms["wplus_reg"]
        terms["loss"] = loss
        return terms, img


def _perceptual_input(x: torch.Tensor) -> torch.Tensor:
    """[N, C, R, R] -> at most 256 px, as the projector feeds VGG."""
    return F.interpolate(x, size=(256, 256), mode="area") if x.shape[2] > 256 else x


def _distance_to(target: torch.Tensor, perceptual, cfg: ProjectConfig, device, align: str) -> Callable | None:
    """images -> perceptual distance to the (fixed) target [N], or None when ``perceptual_weight`` is 0;
    the default distance cuts its chips from crop ``align`` (the generator's)."""
    if cfg.perceptual_weight == 0:
        return None
    against = ReferenceDistance(resolve_perceptual(perceptual, device, align=align))
    target_refs = against.refs(_perceptual_input(target))  # the target is fixed: embedded once, not every step
    return lambda img: against.dist(img, target_refs)


def _initial_noise(G, seeds: list[int], device) -> tuple[list[torch.Generator], list[torch.Tensor]]:
    """One generator per target (it also draws the latent noise) and the noise maps, one [N, 1, r, r] per layer."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    shapes = [tuple(s[2:]) for s in G.synthesis.noise_shapes()]
    noise = [torch.stack([torch.randn(1, *hw, generator=g) for g in gens]).to(device).requires_grad_(True)
             for hw in shapes]  # each [N, 1, r, r]
    return gens, noise


# ---------------------------------------------------------------------------------------------
# Projection


def project(G, target: torch.Tensor, *, space: str = "w", config: ProjectConfig | None = None,
            init: torch.Tensor | Projection | None = None,
            perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
            seed: int | Sequence[int] = 0, device=None, progress: bool = True, return_images: bool = False,
            **hyper) -> Projection:
    """Project images into the latent space of ``G`` (the StyleGAN2 projector, batched).

    G: a facelab ``Generator`` (it is not modified and its weights get no gradients).
    target: ``[N, 3, H, W]`` in [-1, 1], square; resized to G's resolution when H differs.
    space: ``"w"`` (one ``w`` per image, broadcast to all layers) or ``"w+"`` (one per layer).
    config: a :class:`ProjectConfig` (default: the StyleGAN2-ADA projector's values); its fields can
    also be given as keywords, which override it: ``steps``, ``lr``, ``w_avg_samples``,
    ``initial_noise_factor``, ``noise_ramp_length``, ``lr_rampdown_length``, ``lr_rampup_length``,
    ``regularize_noise_weight``, ``perceptual_weight``, ``pixel_weight``, ``wplus_reg``, ``whiten``.
    init: starting latent, W ``[N, w_dim]`` (or ``[w_dim]`` for all) or W+ ``[N, num_ws, w_dim]``
    (``space="w+"`` only), or a previous :class:`Projection` (e.g. W first, then W+). Default: the
    mean of W. Noise maps always start random.
    perceptual: a callable ``(a, b) -> [N]`` distances between image batches in [-1, 1]; default
    ``facelab.metrics.default_perceptual`` (a cached ``PerceptualDistance()``: dlib-LPIPS on faces in
    the world's crop). Images larger than 256 px are area-downsampled to 256 before it, as in the
    projector. An ``nn.Module`` is moved to the device.
    seed: the random latent noise and initial noise maps. One int: every target uses the same
    random stream (a batch gives the same result as each image alone); or one int per target.
    device: where to optimise (default: G's device; another one works on a copy of G).
    progress: show a tqdm progress bar. return_images: keep the final reconstructions.

    Returns a :class:`Projection`.
    """
    t0 = time.perf_counter()
    cfg = configured(ProjectConfig, config, hyper, "project")
    space = space.lower() if isinstance(space, str) else space
    if space not in SPACES:
        raise ValueError(f"space must be 'w' or 'w+', got {space!r}")
    if cfg.steps < 1:
        raise ValueError(f"steps must be a positive int, got {cfg.steps!r}")
    check_images(target, "target", channels=G.img_channels, square=True, nonempty=True)
    n = target.shape[0]
    seeds = _seeds(seed, n)
    init = _check_init(init, space, n, G)
    if device is not None:
        G = on_device(G, device)
    device = device_of(G)
    target = resize(target.detach().to(device, torch.float32), G.img_resolution)  # [N, C, R, R]

    distance = _distance_to(target, perceptual, cfg, device, generator_crop(G))
    stats = w_moments(G, cfg.w_avg_samples, 0)  # the W statistics do not depend on the projection seed
    w_avg = stats.mean.float().to(device)
    layers = 1 if space == "w" else G.num_ws
    latent = _Latent(stats, init.to(device) if init is not None else w_avg.expand(n, layers, G.w_dim), w_avg,
                     cfg.whiten)
    gens, noise = _initial_noise(G, seeds, device)
    loss = _Loss(G, target, distance, cfg, stats.std)
    history = _optimise(latent, noise, gens, loss, cfg, space, progress)

    with torch.no_grad():
        w_final = latent().detach()  # [N, layers, w_dim]
    noise_final = [buf.detach().clone() for buf in noise]
    with torch.no_grad():
        terms, img = loss(w_final, w_final, noise_final)
    return Projection(
        ws=w_final.expand(n, G.num_ws, G.w_dim).clone(),  # [N, num_ws, w_dim]
        w=w_final[:, 0].clone() if space == "w" else None,
        noise=noise_final,
        space=space,
        history=history,
        final={k: v.detach().cpu() for k, v in terms.items()},
        images=img.detach() if return_images else None,
        steps=cfg.steps,
        seconds=time.perf_counter() - t0,
    )


def _optimise(latent: _Latent, noise: list[torch.Tensor], gens: list[torch.Generator], loss: _Loss,
              cfg: ProjectConfig, space: str, progress: bool) -> dict[str, list[float]]:
    """The projector's loop: ``cfg.steps`` Adam steps over the latent and the noise maps. Returns the history."""
    params = [latent.var] + noise
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=cfg.lr)
    n, layers, w_dim = latent.var.shape
    device = latent.var.device
    history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    lrs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, desc=f"project {space.upper()}", leave=False)
    for step in range(cfg.steps):
        cur_lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = cur_lr
        lrs.append(cur_lr)

        noise_scale = cfg.latent_noise(step, loss.w_std)
        w_opt = latent()
        w_in = w_opt
        if noise_scale > 0:
            w_noise = torch.stack([torch.randn(layers, w_dim, generator=g) for g in gens]).to(device)
            w_in = w_opt + w_noise * noise_scale
        terms, _ = loss(w_opt, w_in, noise)
        grads = torch.autograd.grad(terms["loss"].sum(), params)  # G's own weights get no gradients
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        with torch.no_grad():  # renormalise every map of every image: zero mean, unit variance
            for buf in noise:
                buf -= buf.mean(dim=(1, 2, 3), keepdim=True)
                buf *= buf.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        for k in HISTORY_KEYS:
            history[k].append(terms[k].detach().mean())
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or step == cfg.steps - 1:
                bar.set_postfix(loss=f"{float(history['loss'][-1]):.4g}")
    if bar is not None:
        bar.close()

    hist = {k: torch.stack(v).cpu().tolist() for k, v in history.items()}
    for step, value in enumerate(hist["loss"]):  # checked once at the end: no device sync per step
        check_loss(value, step, f"the {space.upper()} projection", f"lower lr (now {cfg.lr:g}) or check the target")
    hist["lr"] = lrs
    return hist


__all__ = ["HISTORY_KEYS", "SPACES", "ProjectConfig", "Projection", "noise_regularization", "project"]
