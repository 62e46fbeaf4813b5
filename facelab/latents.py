"""Latents: the statistics of W, distances from it, the one latent check, and sampling what synthesis takes.

Shapes, everywhere in facelab: ``z`` ``[N, z_dim]``; a W latent ``[N, w_dim]``; a W+ latent
``[N, num_ws, w_dim]`` (one ``w`` per synthesis layer, ``num_ws = 2 log2(resolution) - 2``);
``G.synthesis`` accepts either and broadcasts W to every layer. Noise maps are one ``[N, 1, r, r]``
tensor per conv layer. Random latents are drawn on the CPU and then moved, so a seed means the same
faces on every device.

* :func:`w_stats`, :func:`w_distance`: the mean and spread of W, and how far latents lie from it
  (the StyleGAN2 projector's ``sigma_W``; a Mahalanobis distance for e4e's editability argument).
* :func:`as_wplus` / :func:`check_latents`: the one check of latents at public boundaries.
* :func:`sample_ws`: ``mapping(z, psi)`` for ``z`` drawn on the CPU; :func:`noise_maps`: explicit
  noise maps equal to what a ``noise_mode`` renders.

G is any facelab ``Generator`` (duck-typed: ``mapping``, ``synthesis``, ``z_dim``, ``w_dim``, ``num_ws``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .utils import device_of

# Derived statistics of W, recomputed when the mapping network's weights change (keyed weakly by
# the mapping module, so nothing outlives its generator). A cache, not configuration.
_W_MOMENTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_ws(G, n: int, *, psi: float = 1.0, generator: torch.Generator | None = None,
              batch_size: int | None = None) -> torch.Tensor:
    """``n`` W+ latents ``mapping(z, psi)`` ``[n, num_ws, w_dim]`` on G's device, without gradients.

    ``z ~ N(0, I)`` is drawn on the CPU from ``generator`` (a ``torch.Generator``; None: the global
    RNG) and mapped in chunks of ``batch_size`` (None: all at once); ``w_avg`` is never updated.
    """
    z = torch.randn(n, G.z_dim, generator=generator)  # drawn on the CPU: the same W on every device
    device = device_of(G.mapping)
    with torch.no_grad():
        if batch_size is None:
            return G.mapping(z.to(device), truncation_psi=psi, update_w_avg=False)
        return torch.cat([G.mapping(zc.to(device), truncation_psi=psi, update_w_avg=False)
                          for zc in z.split(batch_size)])


def noise_maps(G, n: int, mode: str, device=None) -> list[torch.Tensor]:
    """Explicit per-layer noise maps ``[n, 1, r, r]`` equal to what ``noise_mode=mode`` renders.

    ``"const"``: G's stored maps (expanded views); ``"none"``: zeros; ``"random"``: fresh normal
    maps. On ``device`` (None: G's).
    """
    device = device_of(G) if device is None else device
    out = []
    for layer in G.synthesis.layers():
        r = layer.resolution
        if mode == "const":
            out.append(layer.noise_const.to(device).view(1, 1, r, r).expand(n, 1, r, r))
        elif mode == "none":
            out.append(torch.zeros(n, 1, r, r, device=device))
        else:
            out.append(torch.randn(n, 1, r, r, device=device))
    return out


# ---------------------------------------------------------------------------------------------
# Statistics of W


@dataclass(frozen=True)
class WMoments:
    """The statistics of W: ``mean`` [w_dim] float64 (CPU), ``std`` = sqrt(E ||w - mean||^2) (the
    projector's sigma_W) and ``chol`` [w_dim, w_dim] float64, the Cholesky factor of the covariance."""

    mean: torch.Tensor
    std: float
    chol: torch.Tensor


def w_moments(G, n: int = 10000, seed: int = 0) -> WMoments:
    """Mean, spread and covariance factor of W from ``n`` mapped ``z`` (cached per mapping network,
    recomputed when its weights change)."""
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"the W statistics need n >= 2 samples, got {n!r}")
    mapping = G.mapping
    params = list(mapping.parameters())
    version = tuple((p.data_ptr(), p._version) for p in params)  # changes when the weights do
    key = (n, int(seed), version)
    cache = _W_MOMENTS.setdefault(mapping, {})
    if key not in cache:
        ws = sample_ws(G, n, generator=torch.Generator().manual_seed(int(seed)), batch_size=4096)
        w = ws[:, 0].cpu().double()  # [n, w_dim]; float64 on the CPU (MPS has none)
        mean = w.mean(0)
        d = w - mean
        std = float(d.square().sum(1).mean().sqrt())
        cov = d.T @ d / (n - 1)
        # A tiny ridge keeps the factor defined when n < w_dim or W is (numerically) degenerate.
        ridge = 1e-6 * float(cov.diagonal().mean()) + 1e-12
        chol = torch.linalg.cholesky(cov + ridge * torch.eye(cov.shape[0], dtype=cov.dtype))
        cache.clear()  # keep only the latest statistics of this mapping
        cache[key] = WMoments(mean, std, chol)
    return cache[key]


def w_stats(G, n: int = 10000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """The mean and spread of W, estimated from ``n`` mapped ``z ~ N(0, I)`` (cached).

    Returns ``(w_avg, w_std)``: ``w_avg`` ``[w_dim]`` float32 on G's device, and the scalar
    ``w_std = sqrt(mean_i ||w_i - w_avg||^2)`` as the StyleGAN2 projector defines it (the RMS
    distance of a sample from the mean; about ``sqrt(w_dim)`` times the per-coordinate std).
    ``z`` is drawn on the CPU from ``seed``, so the statistics are the same on every device. The
    result is cached per mapping network and recomputed when its weights change.
    """
    m = w_moments(G, n, seed)
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
    compare layers directly (``ws.std(1)``) or use the projector's ``wplus_reg`` term.
    """
    w_dim = G.w_dim
    ws = check_latents(ws, G, layers=(1, G.num_ws), float_only=False)  # [N, L, w_dim], L = 1 for W
    m = w_moments(G, n, seed)
    d = ws.detach().cpu().double() - m.mean  # [N, L, w_dim]
    if kind == "mahalanobis":
        white = torch.linalg.solve_triangular(m.chol, d.reshape(-1, w_dim).T, upper=False).T  # [N*L, w_dim]
        dist = (white.square().sum(-1) / w_dim).sqrt().reshape(d.shape[:2])
    elif kind == "l2":
        dist = d.norm(dim=-1) / m.std
    else:
        raise ValueError(f"kind must be 'mahalanobis' or 'l2', got {kind!r}")
    return dist.mean(1).float().to(ws.device)  # [N]


# ---------------------------------------------------------------------------------------------
# The latent check


def check_latents(ws, G, *, n: int | None = None, what: str = "ws", layers: tuple[int, ...] | None = None,
                  float_only: bool = True) -> torch.Tensor:
    """``ws`` as ``[N, L, w_dim]``: W ``[N, w_dim]`` becomes ``[N, 1, w_dim]`` (a view), W+ is kept.

    ``G``: anything with ``num_ws`` and ``w_dim`` (a generator, a mapper). ``n``: the number of
    latents required (one per image), else any N >= 1. ``layers``: the layer counts allowed for a 3-d
    input (default: ``num_ws`` only). A non-tensor is a ``TypeError``; any other misfit a one-line
    ``ValueError`` naming ``what``. Values are not looked at (see :func:`facelab.utils.check_finite`).
    """
    num_ws, w_dim = G.num_ws, G.w_dim
    layers = (num_ws,) if layers is None else layers
    count = "N" if n is None else n
    form = f"W latents [{count}, {w_dim}] or W+ latents [{count}, {num_ws}, {w_dim}]"
    if not isinstance(ws, torch.Tensor):
        raise TypeError(f"{what} must be {form} (a torch.Tensor), got {type(ws).__name__}")
    if float_only and not ws.is_floating_point():
        raise ValueError(f"{what} must be float {form}, got {ws.dtype}")
    if ws.ndim == 2 and ws.shape[1] == w_dim:
        x, fits = ws.unsqueeze(1), True  # W: [N, 1, w_dim]
    else:
        x, fits = ws, ws.ndim == 3 and ws.shape[2] == w_dim and ws.shape[1] in layers
    if not fits or x.shape[0] < 1 or (n is not None and x.shape[0] != n):
        raise ValueError(f"{what} must be {form}{' (one per image)' if n is not None else ''}, "
                         f"got {list(ws.shape)}")
    return x


def as_wplus(ws, G, *, n: int | None = None, what: str = "ws") -> torch.Tensor:
    """W ``[N, w_dim]`` or W+ ``[N, num_ws, w_dim]`` -> W+ ``[N, num_ws, w_dim]`` (W broadcast to every
    layer, a view), after :func:`check_latents`."""
    return check_latents(ws, G, n=n, what=what).expand(-1, G.num_ws, -1)


__all__ = ["WMoments", "as_wplus", "check_latents", "noise_maps", "sample_ws", "w_distance", "w_moments", "w_stats"]
