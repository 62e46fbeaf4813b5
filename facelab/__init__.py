"""facelab: editing faces with StyleGAN, a course and the small PyTorch library behind it.

    import facelab as fl
    G = fl.load_generator("world64")          # the embedded 64 px StyleGAN2 world (offline)
    ws = G.mapping(torch.randn(4, G.z_dim))    # W+ latents [4, num_ws, w_dim]
    img = G.synthesis(ws)                       # images [4, 3, 64, 64] in [-1, 1]

Modules: ``nets`` (networks), ``hub`` (named weights), ``imaging`` (photos <-> tensors, grids),
``train`` (how the shipped weights were made).
"""
from . import hub, imaging, nets, viz
from .hub import load_generator
from .imaging import make_grid, save_image, to_pil, to_tensor
from .nets.stylegan2 import Discriminator, Generator, StyleGAN2Config, count_params, get_config, style_mix
from .nets.identity import load_identity
from .nets.teacher import sample_teacher
from .utils import get_device, seed_all, show_source, z_from_seeds

__version__ = "0.1.0"

__all__ = [
    "Discriminator", "Generator", "StyleGAN2Config", "count_params", "get_config", "get_device", "hub", "imaging",
    "load_generator", "load_identity", "make_grid", "nets", "sample_teacher", "save_image", "seed_all", "show_source",
    "style_mix", "to_pil", "to_tensor", "viz", "z_from_seeds",
]
