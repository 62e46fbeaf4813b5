"""GAN inversion: find the latent (and noise maps) from which a StyleGAN generator renders a given image.

Optimisation-based projection as in the StyleGAN2 projector (Karras et al., "Analyzing and Improving
the Image Quality of StyleGAN", CVPR 2020, Sec. 5; the StyleGAN2-ADA ``projector.py``), into
``W`` (one ``w`` per image, broadcast to every layer) or ``W+`` (one ``w`` per layer, Abdal et al.,
"Image2StyleGAN", ICCV 2019), with an optional penalty that pulls the ``W+`` layers together (Tov et
al., "Designing an Encoder for StyleGAN Image Manipulation" (e4e), SIGGRAPH 2021: latents close to
``W`` edit better, latents far from it reconstruct better -- the distortion-editability tradeoff).

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
the Good Latents?", 2020). The embedded world's W is very anisotropic (covariance eigenvalues from
about 0.001 to 9), and the plain parametrisation walks off it: on world64 faces (100 steps,
default loss) a W projection then lands about 9 (Mahalanobis, :func:`w_distance`) from W instead
of about 1, with twice the pixel error and a ``w`` no closer to the true one than ``w_avg``.
``whiten=False`` optimises ``w`` directly, as the StyleGAN2-ADA projector does.

Each target of a batch has its own latent, its own noise maps and its own loss (the batch loss is
the sum), so the images do not interact: Adam works per element, and with one integer ``seed`` every
target draws the same random numbers, so projecting a batch gives the same result as projecting each
image alone (up to floating point).

    proj = project(G, target, space="w+", steps=300)
    proj.ws               # [N, num_ws, w_dim]
    proj.synthesize(G)    # [N, 3, R, R], rendered with the projection's noise maps
    w_distance(proj.ws, G)  # how far from the W distribution (1 ~ a typical sample of W)
"""
from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .imaging import check_image_values, resize
from .utils import check_finite, check_loss

SPACES = ("w", "w+")
HISTORY_KEYS = ("loss", "perceptual", "pixel", "noise_reg", "wplus_reg")

# Derived statistics of W, recomputed when the mapping network's weights change (keyed weakly by
# the mapping module, so nothing outlives its generator). A cache, not configuration.
_W_MOMENTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------------------------
# Statistics of W


@dataclass(frozen=True)
class _Moments:
    mean: torch.Tensor   # [w_dim] float64, CPU
    std: float           # sqrt(E ||w - mean||^2), the projector's sigma_W
    chol: torch.Tensor   # [w_dim, w_dim] float64 Cholesky factor of the covariance


def _w_moments(G, n: int, seed: int) -> _Moments:
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"the W statistics need n >= 2 samples, got {n!r}")
    mapping = G.mapping
    params = list(mapping.parameters())
    device = params[0].device if params else torch.device("cpu")
    version = tuple((p.data_ptr(), p._version) for p in params)  # changes when the weights do
    key = (n, int(seed), version)
    cache = _W_MOMENTS.setdefault(mapping, {})
    if key not in cache:
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, G.z_dim, generator=gen)  # drawn on the CPU: the same W on every device
        chunks = []
        with torch.no_grad():
            for zc in z.split(4096):
                ws = mapping(zc.to(device), truncation_psi=1.0, update_w_avg=False)  # [n, num_ws, w_dim]
                chunks.append(ws[:, 0].double().cpu())
        w = torch.cat(chunks)  # [n, w_dim]
        mean = w.mean(0)
        d = w - mean
        std = float(d.square().sum(1).mean().sqrt())
        cov = d.T @ d / (n - 1)
        # A tiny ridge keeps the factor defined when n < w_dim or W is (numerically) degenerate.
        ridge = 1e-6 * float(cov.diagonal().mean()) + 1e-12
        chol = torch.linalg.cholesky(cov + ridge * torch.eye(cov.shape[0], dtype=cov.dtype))
        cache.clear()  # keep only the latest statistics of this mapping
        cache[key] = _Moments(mean, std, chol)
    return cache[key]


def w_stats(G, n: int = 10000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """The mean and spread of W, estimated from ``n`` mapped ``z ~ N(0, I)`` (cached).

    Returns ``(w_avg, w_std)``: ``w_avg`` ``[w_dim]`` float32 on G's device, and the scalar
    ``w_std = sqrt(mean_i ||w_i - w_avg||^2)`` as the StyleGAN2 projector defines it (the RMS
    distance of a sample from the mean; about ``sqrt(w_dim)`` times the per-coordinate std).
    ``z`` is drawn on the CPU from ``seed``, so the statistics are the same on every device. The
    result is cached per mapping network and recomputed when its weights change.
    """
    m = _w_moments(G, n, seed)
    return m.mean.float().to(G.mapping.w_avg.device), m.std


def w_distance(ws: torch.Tensor, G, *, kind: str = "mahalanobis", n: int = 10000, seed: int = 0) -> torch.Tensor:
    """How far latents lie from the distribution of W: one number per latent, ``[N]``.

    ws: W ``[N, w_dim]`` or W+ ``[N, num_ws, w_dim]``. For each layer ``l`` the distance of ``w_l``
    from the mean of W, in units of W's own spread, then averaged over the layers:

    * ``kind="mahalanobis"`` (default): ``sqrt((w_l - mu)^T Sigma^-1 (w_l - mu) / w_dim)`` with the
      mean ``mu`` and covariance ``Sigma`` of ``n`` mapped samples. A sample of W scores about 1
      (its square averages exactly 1 for a Gaussian), the truncation trick with ``psi`` about
      ``psi``; a latent pushed along directions W barely uses (which W+ inversions do) scores far
      above 1 even when its norm looks ordinary.
    * ``kind="l2"``: ``||w_l - mu|| / w_std`` (see :func:`w_stats`); also about 1 for a sample of
      W, but blind to the direction of the offset.

    It is a realism / editability indicator for notebook 02 (e4e's argument: edits behave when the
    latent stays near W). It does not see how different the W+ layers are from each other; for that
    compare layers directly (``ws.std(1)``) or use :func:`project`'s ``wplus_reg`` term.
    """
    num_ws, w_dim = G.num_ws, G.w_dim
    if not isinstance(ws, torch.Tensor):
        raise TypeError(f"ws must be a torch.Tensor, got {type(ws).__name__}")
    if ws.ndim == 2 and ws.shape[1] == w_dim:
        ws = ws.unsqueeze(1)
    if ws.ndim != 3 or ws.shape[2] != w_dim or ws.shape[1] not in (1, num_ws):
        raise ValueError(f"ws must be W [N, {w_dim}] or W+ [N, {num_ws}, {w_dim}], got {list(ws.shape)}")
    m = _w_moments(G, n, seed)
    d = ws.detach().double().cpu() - m.mean  # [N, L, w_dim]
    if kind == "mahalanobis":
        white = torch.linalg.solve_triangular(m.chol, d.reshape(-1, w_dim).T, upper=False).T  # [N*L, w_dim]
        dist = (white.square().sum(-1) / w_dim).sqrt().reshape(d.shape[:2])
    elif kind == "l2":
        dist = d.norm(dim=-1) / m.std
    else:
        raise ValueError(f"kind must be 'mahalanobis' or 'l2', got {kind!r}")
    return dist.mean(1).float().to(ws.device)  # [N]


# ---------------------------------------------------------------------------------------------
# Projection


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
        device = G.mapping.w_avg.device
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


def _lr_at(t: float, lr: float, rampdown: float, rampup: float) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)
    return lr * ramp


def _check_target(target, G) -> torch.Tensor:
    c, r = G.img_channels, G.img_resolution
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor [N, {c}, H, W] in [-1, 1], got {type(target).__name__}; "
                        "convert photos with facelab.to_tensor")
    if target.ndim != 4 or target.shape[1] != c or target.shape[0] < 1:
        hint = " (add the batch axis: target[None])" if target.ndim == 3 else ""
        raise ValueError(f"target must be [N, {c}, H, W], got {list(target.shape)}{hint}")
    if target.shape[2] != target.shape[3]:
        raise ValueError(f"target must be square (the generator renders {r}x{r}), got "
                         f"{target.shape[2]}x{target.shape[3]}; crop or align the face first")
    if not target.is_floating_point():
        raise ValueError(f"target must be a float tensor in [-1, 1], got {target.dtype}; use facelab.to_tensor")
    check_image_values(target, "target")  # generated images overshoot [-1, 1] a little; 0..255 pixels do not
    return target


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
    if x.ndim == 2 and x.shape == (n, w_dim):
        x = x.unsqueeze(1)  # [N, 1, w_dim]
    elif x.ndim == 3 and x.shape == (n, num_ws, w_dim):
        if space == "w":
            raise ValueError("space='w' optimises one w per image, but init is a W+ latent "
                             f"[{n}, {num_ws}, {w_dim}]; pass a W latent [{n}, {w_dim}] (e.g. ws[:, 0]) "
                             "or project with space='w+'")
    else:
        raise ValueError(f"init must be W [{n}, {w_dim}] or W+ [{n}, {num_ws}, {w_dim}] (one per target), "
                         f"got {list(init.shape)}")
    if space == "w+":
        x = x.expand(n, num_ws, w_dim)
    return x.clone()


def project(
    G,
    target: torch.Tensor,
    *,
    space: str = "w",
    steps: int = 1000,
    lr: float = 0.1,
    w_avg_samples: int = 10000,
    initial_noise_factor: float = 0.05,
    noise_ramp_length: float = 0.75,
    lr_rampdown_length: float = 0.25,
    lr_rampup_length: float = 0.05,
    regularize_noise_weight: float = 1e5,
    perceptual_weight: float = 1.0,
    pixel_weight: float = 0.0,
    wplus_reg: float = 0.0,
    whiten: bool = True,
    init: torch.Tensor | Projection | None = None,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int | Sequence[int] = 0,
    progress: bool = True,
    return_images: bool = False,
) -> Projection:
    """Project images into the latent space of ``G`` (the StyleGAN2 projector, batched).

    G: a facelab ``Generator`` (any device; it is not modified and its weights get no gradients).
    target: ``[N, 3, H, W]`` in [-1, 1], square; resized to G's resolution when H differs.
    space: ``"w"`` (one ``w`` per image, broadcast to all layers) or ``"w+"`` (one per layer).
    steps, lr, w_avg_samples, initial_noise_factor, noise_ramp_length, lr_rampdown_length,
    lr_rampup_length, regularize_noise_weight: the StyleGAN2-ADA projector's hyperparameters, with
    its defaults (see the module docstring for the schedule).
    perceptual_weight, pixel_weight: weights of the perceptual distance and of the pixel MSE (the
    projector uses the perceptual distance only). With ``perceptual_weight=0`` no perceptual
    network is built or run.
    wplus_reg: weight of the W+ spread penalty ``mean_l ||w_l - mean(w)||^2 / w_std^2`` (0 = free
    W+; large values approach W). Ignored for ``space="w"``.
    whiten: optimise in W's whitened coordinates (module docstring); False = the ADA projector.
    init: starting latent, W ``[N, w_dim]`` (or ``[w_dim]`` for all) or W+ ``[N, num_ws, w_dim]``
    (``space="w+"`` only), or a previous :class:`Projection` (e.g. W first, then W+). Default: the
    mean of W. Noise maps always start random.
    perceptual: a callable ``(a, b) -> [N]`` distances between image batches in [-1, 1]; default
    ``facelab.metrics.perceptual_distance`` (a cached ``PerceptualDistance()``: dlib-LPIPS on faces in
    the world's crop). Images larger than 256 px are area-downsampled to 256 before it, as in the
    projector. An ``nn.Module`` is moved to G's device.
    seed: the random latent noise and initial noise maps. One int: every target uses the same
    random stream (a batch gives the same result as each image alone); or one int per target.
    progress: show a tqdm progress bar. return_images: keep the final reconstructions.

    Returns a :class:`Projection`.
    """
    t0 = time.perf_counter()
    space = space.lower() if isinstance(space, str) else space
    if space not in SPACES:
        raise ValueError(f"space must be 'w' or 'w+', got {space!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    for name, value in (("lr", lr), ("regularize_noise_weight", regularize_noise_weight),
                        ("perceptual_weight", perceptual_weight), ("pixel_weight", pixel_weight),
                        ("wplus_reg", wplus_reg), ("initial_noise_factor", initial_noise_factor)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if perceptual_weight == 0 and pixel_weight == 0:
        raise ValueError("perceptual_weight and pixel_weight are both 0: nothing ties the latent to the target")
    target = _check_target(target, G)
    n = target.shape[0]
    seeds = [int(seed)] * n if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"seed must be one int or one per target ({n}), got {len(seeds)}")
    init = _check_init(init, space, n, G)

    device = G.mapping.w_avg.device
    num_ws, w_dim = G.num_ws, G.w_dim
    target = resize(target.detach().to(device, torch.float32), G.img_resolution)  # [N, C, R, R]

    def perceptual_input(x):  # [N, C, R, R] -> at most 256 px, as the projector feeds VGG
        return F.interpolate(x, size=(256, 256), mode="area") if x.shape[2] > 256 else x

    target_p = perceptual_input(target)
    if perceptual_weight > 0:
        if perceptual is None:
            from .metrics import default_perceptual  # lazy: only when the default is needed
            perceptual = default_perceptual(device)  # PerceptualDistance(), one cached instance per device
        if isinstance(perceptual, nn.Module):
            perceptual = perceptual.to(device).eval()
    if perceptual_weight > 0 and getattr(perceptual, "backend", None) == "dlib" and hasattr(perceptual, "features"):
        with torch.no_grad():  # the target is fixed: embed it once, not at every step
            target_f = perceptual.features(target_p)
        distance = lambda img: perceptual.from_features(perceptual.features(img), target_f)  # noqa: E731
    else:
        distance = lambda img: perceptual(img, target_p)  # noqa: E731

    stats = _w_moments(G, w_avg_samples, 0)  # the W statistics do not depend on the projection seed
    w_avg = stats.mean.float().to(device)
    w_std = stats.std

    # Latent: [N, 1, w_dim] for W, [N, num_ws, w_dim] for W+. With ``whiten`` Adam optimises
    # u = L^-1 (w - w_avg) (Sigma = L L^T, the covariance of W) and w = w_avg + L u.
    layers = 1 if space == "w" else num_ws
    start = init.to(device) if init is not None else w_avg.expand(n, layers, w_dim)
    if whiten:
        chol = stats.chol.float().to(device)  # [w_dim, w_dim], lower triangular
        u = torch.linalg.solve_triangular(chol, (start - w_avg).reshape(-1, w_dim).T, upper=False).T
        opt_var = u.reshape(n, layers, w_dim).clone().requires_grad_(True)

        def latent():
            return w_avg + opt_var @ chol.T  # [N, layers, w_dim]
    else:
        opt_var = start.clone().requires_grad_(True)

        def latent():
            return opt_var

    # Noise maps: one [N, 1, r, r] map per conv layer, each target from its own generator.
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    shapes = [tuple(s[2:]) for s in G.synthesis.noise_shapes()]
    noise = [torch.stack([torch.randn(1, *hw, generator=g) for g in gens]).to(device).requires_grad_(True)
             for hw in shapes]  # each [N, 1, r, r]
    params = [opt_var] + noise
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=lr)

    def losses(w_lat, w_render, synth_noise):
        """Per-target loss terms [N]: render ``w_render`` [N, layers, w_dim] with ``synth_noise``;
        the W+ spread penalty acts on the latent ``w_lat`` itself, not on its noisy copy."""
        img = G.synthesis(w_render.expand(n, num_ws, w_dim), noise=synth_noise)  # [N, C, R, R]
        terms = {"pixel": (img - target).square().mean(dim=(1, 2, 3))}
        if perceptual_weight > 0:
            d = distance(perceptual_input(img))
            if not (isinstance(d, torch.Tensor) and d.shape == (n,)):
                raise ValueError(f"perceptual(a, b) must return one distance per image [{n}], "
                                 f"got {getattr(d, 'shape', type(d).__name__)}")
            terms["perceptual"] = d
        else:
            terms["perceptual"] = torch.full((n,), float("nan"), device=device)
        terms["noise_reg"] = noise_regularization(synth_noise)
        spread = w_lat - w_lat.mean(1, keepdim=True)  # [N, layers, w_dim]; 0 for W
        terms["wplus_reg"] = spread.square().sum(-1).mean(1) / w_std ** 2
        loss = pixel_weight * terms["pixel"] + regularize_noise_weight * terms["noise_reg"]
        if perceptual_weight > 0:
            loss = loss + perceptual_weight * terms["perceptual"]
        if wplus_reg > 0:
            loss = loss + wplus_reg * terms["wplus_reg"]
        terms["loss"] = loss
        return terms, img

    history = {k: [] for k in HISTORY_KEYS}
    lrs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"project {space.upper()}", leave=False)
    for step in range(steps):
        t = step / steps
        cur_lr = _lr_at(t, lr, lr_rampdown_length, lr_rampup_length)
        for group in optimizer.param_groups:
            group["lr"] = cur_lr
        lrs.append(cur_lr)

        noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2 \
            if noise_ramp_length > 0 else 0.0
        w_opt = latent()
        w_in = w_opt
        if noise_scale > 0:
            w_noise = torch.stack([torch.randn(layers, w_dim, generator=g) for g in gens]).to(device)
            w_in = w_opt + w_noise * noise_scale
        terms, _ = losses(w_opt, w_in, noise)
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
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{float(history['loss'][-1]):.4g}")
    if bar is not None:
        bar.close()

    hist = {k: torch.stack(v).cpu().tolist() for k, v in history.items()}
    for step, loss in enumerate(hist["loss"]):  # checked once at the end: no device sync per step
        check_loss(loss, step, f"the {space.upper()} projection", f"lower lr (now {lr:g}) or check the target")
    hist["lr"] = lrs
    with torch.no_grad():
        w_final = latent().detach()  # [N, layers, w_dim]
    ws_final = w_final.expand(n, num_ws, w_dim).clone()  # [N, num_ws, w_dim]
    noise_final = [buf.detach().clone() for buf in noise]
    with torch.no_grad():
        terms, img = losses(w_final, w_final, noise_final)
    final = {k: v.detach().cpu() for k, v in terms.items()}
    return Projection(
        ws=ws_final,
        w=w_final[:, 0].clone() if space == "w" else None,
        noise=noise_final,
        space=space,
        history=hist,
        final=final,
        images=img.detach() if return_images else None,
        steps=steps,
        seconds=time.perf_counter() - t0,
    )
