"""PTI as the paper runs it, on the shipped photos: the result notebook 03 shows next to its short live run.

    python scripts/pti_paper.py                              # world64 -> docs/world64/pti_paper/
    python scripts/pti_paper.py --world NAME --out DIR --threads 2

For each photo (Grace Hopper, the astronaut; aligned to the world's crop with MTCNN), one at a time as
in Roich et al.: a W pivot with the StyleGAN2 projector (450 steps), a W+ inversion from it with the
same budget (450 more steps, for the comparison), and pivotal tuning with ``pti.PTIConfig()`` — the
paper's 350 steps, locality regulariser on, the library's early stop. Then two age edits from the
pivot on the tuned generator: InterFaceGAN (+2 distance-std along the world's age boundary) and the
Latent-to-Latent mapper (+10 years, where the world has a mapper).

Writes ``comparison.png`` (photo | W | W+ | PTI | PTI + InterFaceGAN age | PTI + mapper age, one row
per photo) and ``results.json`` (distortion of each inversion per photo — MSE, dlib-lpips, dlib
identity —, PTI's steps and seconds, the configuration, and how it was made). Several minutes on 2
CPU cores; the tuned generators are not kept (megabytes each).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import matplotlib.cbook
import skimage.data
import torch

import facelab as fl
from facelab import interpret as I
from facelab import pti

AGE_STEP_STD = 2.0   # InterFaceGAN edit: distance-std units along the age boundary
MAPPER_AGE = 10.0    # mapper edit: years


def photos() -> dict:
    return {"Grace Hopper": matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False),
            "astronaut": skimage.data.astronaut()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default="world64")
    ap.add_argument("--out", default=None, help="default: docs/WORLD/pti_paper")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pivot-steps", type=int, default=None, help="default: the paper's (PTIConfig)")
    ap.add_argument("--tune-steps", type=int, default=None, help="default: the paper's (PTIConfig)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or f"docs/{args.world}/pti_paper")
    out.mkdir(parents=True, exist_ok=True)

    fl.seed_all(0)
    world = fl.load_world(args.world)  # the shipped world64, "ffhq", or a built world's name/folder
    G = world.G
    R = G.img_resolution
    age = world.boundaries("w")["age"]
    try:
        mapper = world.mapper
    except Exception as e:  # noqa: BLE001 - a world without a mapper still gets the rest
        print(f"no mapper for {args.world}: {e}", file=sys.stderr)
        mapper = None
    config = pti.PTIConfig()
    config = config.replace(pivot_steps=args.pivot_steps or config.pivot_steps, tune_steps=args.tune_steps or config.tune_steps)
    rows, results = [], {}
    for name, src in photos().items():
        photo = world.align(src)[None]                                  # [1, 3, R, R] in [-1, 1], the world's crop
        t0 = time.perf_counter()
        proj_w = fl.invert.project(G, photo, space="w", steps=config.pivot_steps, seed=config.seed, progress=False)
        proj_wp = fl.invert.project(G, photo, space="w+", steps=config.pivot_steps, init=proj_w, seed=config.seed,
                                    progress=False)
        t1 = time.perf_counter()
        res = pti.tune(G, photo, config=config, pivots=proj_w, progress=False)
        t2 = time.perf_counter()
        with torch.no_grad():
            recon = {"W": proj_w.synthesize(G), "W+": proj_wp.synthesize(G), "PTI": res.reconstruct()}
            ifg = res.G.synthesis(I.edit(res.pivots, age, AGE_STEP_STD * age.report.distance_std), noise_mode="const")
            mapped = (res.G.synthesis(mapper.edit(fl.latents.as_wplus(res.pivots, G), age=MAPPER_AGE), noise_mode="const")
                      if mapper is not None else torch.ones_like(photo))
        rows += [photo, recon["W"], recon["W+"], recon["PTI"], ifg.clamp(-1, 1), mapped.clamp(-1, 1)]
        dist = {k: {m: float(v) for m, v in fl.metrics.distortion(img.clamp(-1, 1), photo).items() if m != "perceptual_metric"}
                for k, img in recon.items()}
        results[name] = {"distortion": dist, "pti_steps_run": res.steps_run, "pti_stopped_early": res.stopped_early,
                         "projection_seconds": round(t1 - t0, 1), "pti_seconds": round(t2 - t1, 1)}
        print(f"{name}: " + ", ".join(f"{k} dlib-lpips {d['perceptual']:.3f}" for k, d in dist.items())
              + f"; PTI {res.steps_run} steps in {t2 - t1:.0f} s", flush=True)
    fl.to_pil(torch.cat(rows), nrow=6, scale=max(1, 192 // R)).save(out / "comparison.png")
    report = {
        "world": args.world, "columns": ["photo", "W", "W+", "PTI", f"PTI + InterFaceGAN age +{AGE_STEP_STD:g} std",
                                         f"PTI + mapper age +{MAPPER_AGE:g} years" if mapper is not None else "(no mapper)"],
        "config": config.to_dict(), "results": results,
        "made_by": "python scripts/pti_paper.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "machine": platform.machine(),
    }
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {out}/comparison.png and results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
