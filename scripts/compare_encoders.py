"""Compare encoders face by face on held-out world faces: is a variant better than the reference?

    python scripts/compare_encoders.py REFERENCE.pt VARIANT.pt [VARIANT.pt ...] [--n 256] [--seed 10000]

Every encoder inverts the same ``--n`` held-out world64 faces (seeds from ``--seed``, never drawn in
training, as :func:`facelab.train.encoder.evaluate` draws them; its card table uses the first 32).
Per face it measures the reconstruction's MSE, dlib-lpips and identity to the target
(:func:`facelab.metrics.distortion`), how far the code's W-distance (:func:`facelab.latents.w_distance`:
about 1 for a sample of W) is from its true code's (each face's true code is a sample of W, so a
code "close to W" in e4e's sense has the same; a code pulled to the mean of W would have a lower
W-distance and is no closer to W), and the code's error to that true code (mean squared error over
the layers; the encoders trained on such a term, so it is reported, not judged alone). As a baseline
for the W-distance it also prints the W-distance of the true codes plus isotropic Gaussian noise of
each encoder's mean squared error: what an encoder whose errors point in no particular direction
would show. For each variant and metric the table gives the paired claim "better
than the reference", judged by :mod:`facelab.claims` (95 % interval of the mean paired difference:
holds / does not hold / inconclusive).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facelab import claims
from facelab.encoder import encode
from facelab.hub import load_encoder
from facelab.latents import w_distance
from facelab.metrics import distortion
from facelab.train.encoder import held_out
from facelab.worlds import load_world

# metric: (higher is better, what it is)
METRICS = {"mse": (False, "MSE"), "perceptual": (False, "dlib-lpips"), "identity": (True, "identity to the target"),
           "w_gap": (False, "W-distance gap to the true code's"), "latent_error": (False, "error to the true code")}


@torch.no_grad()
def measure(world, E, target: torch.Tensor, true_ws: torch.Tensor, true_wd: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-face metrics of encoder ``E`` on ``target`` faces whose true W+ codes are ``true_ws`` (W-distance
    ``true_wd``)."""
    ws = encode(E, target, G=world.G)
    d = distortion(world.G.synthesis(ws, noise_mode="const").clamp(-1, 1), target)
    wd = w_distance(ws, world.G).cpu()
    return {"mse": d["mse"], "perceptual": d["perceptual"], "identity": d["identity"], "w_distance": wd,
            "w_gap": (wd - true_wd).abs(),
            "latent_error": (ws - true_ws).square().mean((1, 2)).cpu()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("encoders", nargs="+", type=Path, help="the reference first, then the variants")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--world", default="world64")
    args = p.parse_args(argv)
    if len(args.encoders) < 2:
        p.error("give the reference encoder and at least one variant")
    world = load_world(args.world, device="cpu")
    G = world.G
    true_ws, target = held_out(G, args.n, args.seed)  # the encoder card's held-out faces
    true_wd = w_distance(true_ws, G).cpu()
    encoders = {path: load_encoder(path, device="cpu") for path in args.encoders}
    results = {path: measure(world, E, target, true_ws, true_wd) for path, E in encoders.items()}
    reference, *variants = args.encoders
    print(f"{args.n} held-out {args.world} faces (seeds from {args.seed}); reference: {reference}")
    print(f"mean W-distance: true codes {true_wd.mean():.3f}; "
          + "; ".join(f"{path} {r['w_distance'].mean():.3f}" for path, r in results.items()))
    gen = torch.Generator().manual_seed(args.seed)
    noisy = {path: w_distance(true_ws + r["latent_error"].mean().sqrt() * torch.randn(true_ws.shape, generator=gen), G)
             for path, r in results.items()}
    print("mean W-distance of the true codes plus isotropic noise as large as each encoder's error (a code "
          "whose error points nowhere in particular): " + "; ".join(f"{path} {d.mean():.3f}" for path, d in noisy.items()))
    for variant in variants:
        rows = []
        for key, (higher, name) in METRICS.items():
            claim = claims.paired_greater if higher else claims.paired_less
            word = "higher" if higher else "lower"
            rows.append(claim(f"{name}: {word} than the reference's", results[variant][key].numpy(),
                              results[reference][key].numpy()))
        meta = encoders[variant].meta
        print(f"\n{variant} (steps {meta.get('steps')}, config {meta.get('config')})\n")
        out = claims.table(rows)
        print(getattr(out, "data", out))


if __name__ == "__main__":
    main()
