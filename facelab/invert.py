"""GAN inversion (notebook 02): find the latent from which a StyleGAN generator renders a given image.

The method is the StyleGAN2 projector (Karras et al., CVPR 2020; the StyleGAN2-ADA ``projector.py``)
into ``W`` or ``W+`` (Abdal et al., "Image2StyleGAN", ICCV 2019), with e4e's pull of the ``W+``
layers towards ``W`` (Tov et al., SIGGRAPH 2021) as a knob: latents close to ``W`` edit better,
latents far from it reconstruct better -- the distortion-editability tradeoff this notebook measures.

The optimisation itself lives in the core, :mod:`facelab.projector` (PTI finds its pivots with it
too; topic modules share the core, not each other), the statistics of W in :mod:`facelab.latents`;
this module is their name in the course::

    proj = project(G, target, space="w+", steps=300)   # or config=ProjectConfig(...), device=...
    proj.ws               # [N, num_ws, w_dim]
    proj.synthesize(G)    # [N, 3, R, R], rendered with the projection's noise maps
    w_distance(proj.ws, G)  # how far from the W distribution (1 ~ a typical sample of W)
    w_stats(G)            # (w_avg [w_dim], sigma_W): the projector's statistics of W

The loss, the latent-noise and learning-rate schedules, the noise regulariser and the whitened
parametrisation are described in :mod:`facelab.projector`; :func:`facelab.metrics.editability`
measures the other side of the tradeoff.
"""
from __future__ import annotations

from .latents import w_distance, w_stats
from .projector import HISTORY_KEYS, SPACES, ProjectConfig, Projection, noise_regularization, project

__all__ = ["HISTORY_KEYS", "SPACES", "ProjectConfig", "Projection", "noise_regularization", "project", "w_distance",
           "w_stats"]
