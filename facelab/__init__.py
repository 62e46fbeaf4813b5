"""facelab: editing faces with StyleGAN, a course and the small PyTorch library behind it.

    import torch, facelab as fl
    G = fl.load_generator("world64")                             # the embedded 64 px StyleGAN2 world (offline)
    ws = G.mapping(torch.randn(4, G.z_dim, device=G.w_avg.device))  # W+ latents [4, num_ws, w_dim], on G's device
    img = G.synthesis(ws)                                          # images [4, 3, 64, 64] in [-1, 1]

Topic modules, one per notebook: ``interpret`` (01, InterFaceGAN), ``invert`` (02, projection into
W/W+), ``pti`` (03, pivotal tuning), ``mapper`` (04, latent-to-latent mapper). They share the core,
not each other: ``latents`` (W statistics, the latent check), ``geometry`` (face templates, warps,
chips), ``projector`` (the StyleGAN2 projector), ``metrics`` (distortion, perceptual distance,
identity), ``faces`` (detection, alignment), ``hub`` (named weights and their loaders), ``imaging``
(photos <-> tensors, the image check, grids), ``utils`` (the device rule, configs), ``viz``,
``widgets`` (slider editors). ``nets`` holds the networks; ``train`` how the shipped weights were
made. ``docs/architecture.md`` draws the layers.
"""
from . import (claims, encoder, faces, geometry, hub, imaging, interpret, invert, latents, mapper, metrics, nets, nvidia,
               photos, projector, pti, viz, widgets)
from .hub import load_generator, load_identity, load_regressor
from .imaging import make_grid, save_image, to_pil, to_tensor
from .nets.stylegan2 import Discriminator, Generator, StyleGAN2Config, count_params, get_config, style_mix
from .nets.teacher import sample_teacher
from .utils import get_device, seed_all, show_source, z_from_seeds
from .worlds import World, load_world

__version__ = "0.1.0"

__all__ = [
    "Discriminator", "Generator", "StyleGAN2Config", "claims", "encoder", "count_params", "faces", "geometry", "get_config",
    "get_device", "hub", "imaging", "interpret", "invert", "latents", "load_generator", "load_identity",
    "load_regressor", "make_grid", "mapper", "metrics", "nets", "nvidia", "projector", "pti", "sample_teacher",
    "save_image", "seed_all", "show_source", "style_mix", "to_pil", "to_tensor", "viz", "widgets", "z_from_seeds",
]
__all__ += ["World", "load_world", "photos", "worlds"]
