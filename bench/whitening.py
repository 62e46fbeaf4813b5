"""Does the projector's whitening (``ProjectConfig.whiten``) keep W projections in W? (CPU, about a minute.)

Projects ``--n`` world64 faces (psi 1, const noise, z seeded by ``--seed``) into W with the default
loss, once with ``whiten=True`` and once with ``whiten=False``, and prints per setting the mean
Mahalanobis distance from W of the found ``w`` (:func:`facelab.latents.w_distance`; a sample of W
scores about 1), the pixel MSE of the reconstruction, and how far the found ``w`` is from the true
one compared with ``w_avg`` (Euclidean). The numbers go into ``docs/world64/projector.md``.

    OMP_NUM_THREADS=1 python bench/whitening.py --n 4 --steps 100
"""
from __future__ import annotations

import argparse
import time

import torch

from facelab.hub import load_generator
from facelab.latents import sample_ws, w_distance
from facelab.projector import project


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    G = load_generator("world64", device="cpu")
    true_ws = sample_ws(G, a.n, psi=1.0, generator=torch.Generator().manual_seed(a.seed))  # [n, num_ws, w_dim]
    with torch.no_grad():
        target = G.synthesis(true_ws, noise_mode="const")
    w_true, w_avg = true_ws[:, 0], G.mapping.w_avg
    print(f"{a.n} world64 faces (psi 1, seed {a.seed}), W projection, {a.steps} steps, default loss; "
          f"|w_avg - w_true| = {(w_avg - w_true).norm(dim=1).mean():.2f}")
    for whiten in (True, False):
        t0 = time.time()
        proj = project(G, target, space="w", steps=a.steps, whiten=whiten, progress=False, return_images=True)
        d = w_distance(proj.w, G).mean().item()
        mse = (proj.images - target).square().mean().item()
        err = (proj.w - w_true).norm(dim=1).mean().item()
        print(f"whiten={whiten}: w_distance {d:.2f}, pixel MSE {mse:.4f}, |w - w_true| {err:.2f} "
              f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
