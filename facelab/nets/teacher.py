"""The teacher: a real 64 px DCGAN face generator whose weights ship inside a PyPI package.

``gan-face-generate==1.1.1`` (MIT licence; by Chien Liu) contains ``weights.tar``, a DCGAN
(Radford et al., 2016) trained on DigiFace-1M (Bae et al., WACV 2023; synthetic faces, released for
research use). The network is five transposed convolutions: z [N, 100, 1, 1] -> 4 -> 8 -> 16 -> 32
-> 64 px, with batch norm and ReLU, and tanh at the end. We rebuild it here and load only its
``netG_state_dict`` tensors (``weights_only=True``); the package's own code is never imported.

The teacher stands in for a face dataset: facelab's StyleGAN2 world is trained on faces streamed
from it, and its faces are the "real" distribution when we measure the world's quality.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..utils import get_device

TEACHER_PACKAGE = "gan-face-generate==1.1.1"
INSTALL_HINT = f"pip install --no-deps {TEACHER_PACKAGE}   (or: make install)"
Z_DIM = 100


class DCGANGenerator(nn.Module):
    """z [N, 100] or [N, 100, 1, 1] -> faces [N, 3, 64, 64] in [-1, 1]."""

    def __init__(self, z_dim: int = Z_DIM, width: int = 64):
        super().__init__()
        chans = [z_dim, width * 8, width * 4, width * 2, width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)  # same indices as the package's state dict
        self.z_dim = z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        return self.main(z)


def teacher_weights_path() -> Path:
    """Path of ``weights.tar`` inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the teacher package is not installed; run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.tar"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the teacher: {INSTALL_HINT}")
    return path


_CACHE: dict[str, DCGANGenerator] = {}


def load_teacher(device=None) -> DCGANGenerator:
    """The pretrained DCGAN teacher in eval mode (batch norm uses its running statistics), on
    ``device`` (None: ``get_device()``); built once per device."""
    device = get_device(device)
    key = str(device)
    if key not in _CACHE:
        state = torch.load(teacher_weights_path(), map_location="cpu", weights_only=True)
        with torch.random.fork_rng(devices=[]):  # building the module must not consume the caller's RNG
            net = DCGANGenerator()
        net.load_state_dict(state["netG_state_dict"])
        _CACHE[key] = net.eval().requires_grad_(False).to(device)
    return _CACHE[key]


@torch.no_grad()
def sample_teacher(n: int, seed: int | None = None, *, device=None,
                   generator: torch.Generator | None = None, batch_size: int = 256) -> torch.Tensor:
    """``n`` teacher faces [n, 3, 64, 64] in [-1, 1], on ``device`` (None: ``get_device()``).

    ``seed`` makes the draw reproducible (the latents are drawn on the CPU, so the same seed gives
    the same faces on every device); otherwise ``generator`` or the global RNG is used.
    """
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    device = get_device(device)
    net = load_teacher(device)
    z = torch.randn(n, Z_DIM, generator=generator) if generator is not None else torch.randn(n, Z_DIM)
    out = [net(chunk.to(device)) for chunk in z.split(batch_size)]
    return torch.cat(out).clamp(-1, 1)
