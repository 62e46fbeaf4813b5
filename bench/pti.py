"""How long does Pivotal Tuning Inversion take? One 64 px photo, the paper's step counts.

    python bench/pti.py                          # CPU (2 threads) and CUDA when present, 3 runs each
    python bench/pti.py --device cpu --runs 1 --profile
    python bench/pti.py --threads 1 --json pti_bench.json

The photo (matplotlib's public-domain ``grace_hopper.jpg`` unless ``--photo``) is aligned into the
world's crop with ``facelab.faces.align_face`` (MTCNN); where that is not installed, a face of the
world itself stands in (``--photo world``); timings do not depend on the image, since early stop
is off (``early_stop=None``: every run makes exactly ``--pivot-steps`` + ``--tune-steps`` steps).

Each run is ``facelab.pti.tune(G, photo)`` with the default ``PTIConfig`` (W projection 450 steps,
350 tuning steps, locality regulariser every step) and the default perceptual distance
(``facelab.metrics.PerceptualDistance``, dlib-lpips); reported: the medians over ``--runs`` runs
after one short warm-up run, split into the projection (pivot) and the tuning phase. With
``--profile`` the cost of each part of one step is timed separately (median of ``--repeats``):
the generator's forward + backward, the perceptual network's, the frozen generator's forward, so
it is clear what dominates. On CUDA the device is synchronised around every timed part.

CPU timings on a shared machine are noisy: other jobs take cores. The medians are what to quote,
together with the thread count the table prints.

Measured on the course's 2-core build machine while other jobs kept it busy (load 4-6), Grace
Hopper, defaults (450 + 350 steps, locality on, early stop off), torch 2.14.1:

| threads | pivot (s) | tune (s) | total (s) | ms / pivot step | ms / tune step | CPU time (s) | runs |
|---|---|---|---|---|---|---|---|
| 1 | 72.5 | 84.4 | 158.6 | 161 | 241 | 133.2 | 3 |
| 2 | (57.5) | (46.8) | - | 1278 | 1338 | - | 3 x 1/10 of the steps |

With two threads on cores that other processes also use, every step got about 8 times slower
(the threads wait for each other); on idle cores expect about the CPU time divided by 1.6-1.8.
Per tuning step (one thread, ``--profile``): the tuned generator's forward + backward (pivot and
regulariser latent in one batch of 2) about 100 ms, the perceptual network's forward + backward
55 ms, the frozen generator 26 ms, the regulariser target's perceptual features 14 ms; a
projection step 130 ms (``facelab.invert.project`` recomputes the target's features every step).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch

import facelab
from facelab import pti
from facelab.invert import project


def load_photo(name: str, G) -> tuple[torch.Tensor, str]:
    """[1, 3, 64, 64] in [-1, 1] and a description."""
    if name.endswith(".pt"):  # a saved aligned batch [N, 3, R, R] (e.g. made where MTCNN is installed)
        x = torch.load(name, weights_only=True)
        return x[:1].float(), f"{name}[0]"
    if name != "world":
        src = name
        if name == "grace_hopper":
            import matplotlib.cbook
            src = matplotlib.cbook.get_sample_data("grace_hopper.jpg")
        try:
            from facelab.faces import align_face
            return align_face(src, size=G.img_resolution)[None], f"{name} (aligned with MTCNN)"
        except Exception as e:  # noqa: BLE001 - MTCNN/facenet-pytorch missing on this machine
            warnings.warn(f"cannot align {name} ({type(e).__name__}: {e}); using a world face instead")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=g).to(G.w_avg.device), truncation_psi=0.7)
        return G.synthesis(ws, noise_mode="const").cpu(), "a world64 face (psi 0.7, z seed 0)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU (process) seconds of ``fn()`` over ``repeats`` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def profile_step(G, photo, perceptual, device, repeats: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds for each part of one tuning step (batch: 1 pivot + 1 locality latent) and one
    projection step."""
    from facelab.pti import _Against, _noise_maps, ball_latents

    G_t = copy.deepcopy(G).requires_grad_(False)
    if device.type == "cpu" and pti._CHANNELS_LAST_ON_CPU:  # as tune() does
        G_t = G_t.to(memory_format=torch.channels_last)
    G_t.synthesis.requires_grad_(True)
    target = photo.to(device)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pivots = G.mapping(torch.randn(1, G.z_dim, generator=g).to(device))
        w_r = ball_latents(pivots, G.mapping(torch.randn(1, G.z_dim, generator=g).to(device), truncation_psi=0.5), 30.0)
    ws2 = torch.cat([pivots, w_r])
    noise2 = [torch.cat([a, b]) for a, b in zip(_noise_maps(G, 1, "const", device), _noise_maps(G, 1, "none", device))]
    against = _Against(perceptual)
    refs = against.refs(target)
    with torch.no_grad():
        imgs2 = G.synthesis(ws2, noise=noise2)
    refs2 = against.cat(refs, against.refs(imgs2[1:]))

    def g_fwd_bwd():
        G_t.synthesis(ws2, noise=noise2).square().mean().backward()

    def g_frozen():
        with torch.no_grad():
            G.synthesis(w_r, noise_mode="none")

    def p_fwd_bwd():
        x = imgs2.clone().requires_grad_(True)
        against.dist(x, refs2).sum().backward()

    def p_refs():
        against.refs(imgs2[1:])

    def p_plain():  # the perceptual module called as (a, b), both images through the network
        x = imgs2.clone().requires_grad_(True)
        perceptual(x, torch.cat([target, imgs2[1:]])).sum().backward()

    w = pivots[:, :1].clone().requires_grad_(True)
    proj_noise = [torch.randn(1, 1, s[2], s[3], device=device).requires_grad_(True) for s in G.synthesis.noise_shapes()]

    def proj_step():  # gradients to the latent and noise only, as facelab.invert.project does
        img = G.synthesis(w.expand(1, G.num_ws, G.w_dim), noise=proj_noise)
        d = perceptual(img, target)
        torch.autograd.grad(d.sum(), [w] + proj_noise)

    parts = {
        "tuned G fwd+bwd (pivot + locality latent)": g_fwd_bwd,
        "frozen G fwd (locality target, no_grad)": g_frozen,
        "perceptual fwd+bwd (2 images, cached refs)": p_fwd_bwd,
        "perceptual refs of the locality target (no_grad)": p_refs,
        "for comparison: perceptual(a, b) fwd+bwd, refs recomputed": p_plain,
        "projection step (G + perceptual, grads to w and noise)": proj_step,
    }
    return {name: timed(fn, device, repeats) for name, fn in parts.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda, or all (cpu + cuda when present)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pivot-steps", type=int, default=450)
    ap.add_argument("--tune-steps", type=int, default=350)
    ap.add_argument("--no-locality", action="store_true", help="time without the locality regulariser")
    ap.add_argument("--photo", default="grace_hopper",
                    help="an image path, grace_hopper, world, or a saved aligned batch (.pt)")
    ap.add_argument("--profile", action="store_true", help="also time the parts of one step")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per part for --profile")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    print(f"torch {torch.__version__}, {platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"os.cpu_count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()}")

    from facelab.metrics import PerceptualDistance

    rows, profiles, report = [], {}, {"runs": []}
    for dev_name in devices:
        device = torch.device(dev_name)
        G = facelab.load_generator("world64", device=device)
        perceptual = PerceptualDistance(device=device)
        photo, desc = load_photo(args.photo, G)
        config = pti.PTIConfig(pivot_steps=args.pivot_steps, tune_steps=args.tune_steps, early_stop=None,
                               locality=not args.no_locality)
        pti.tune(G, photo, config=pti.PTIConfig(pivot_steps=3, tune_steps=3, early_stop=None), perceptual=perceptual,
                 progress=False)  # warm-up
        runs = []
        for i in range(args.runs):
            # The two phases as tune() runs them (tune(G, photo, config=config) does exactly this),
            # called separately so that each gets its wall-clock and its CPU time.
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            proj = project(G, photo.to(device), space="w", steps=config.pivot_steps, lr=config.pivot_lr,
                           perceptual=perceptual, seed=config.seed, progress=False)
            sync(device)
            w1, c1 = time.perf_counter(), time.process_time()
            res = pti.tune(G, photo, pivots=proj, config=config, perceptual=perceptual, progress=False)
            sync(device)
            w2, c2 = time.perf_counter(), time.process_time()
            runs.append((w1 - w0, w2 - w1, w2 - w0, c1 - c0, c2 - c1))
            print(f"{dev_name} run {i + 1}/{args.runs}: pivot {w1 - w0:.1f} s (cpu {c1 - c0:.1f} s), "
                  f"tune {w2 - w1:.1f} s (cpu {c2 - c1:.1f} s); final perceptual {res.history['perceptual'][-1]:.3f}",
                  flush=True)
        threads = torch.get_num_threads() if dev_name == "cpu" else "-"
        if runs:  # --runs 0: only the --profile table
            piv, tun, tot, cpiv, ctun = (statistics.median(r[k] for r in runs) for k in range(5))
            rows.append((dev_name, threads, piv, tun, tot, 1000 * piv / max(args.pivot_steps, 1),
                         1000 * tun / max(args.tune_steps, 1), cpiv + ctun, len(runs)))
        report["runs"].append({"device": dev_name, "threads": threads, "photo": desc, "runs": runs})
        if args.profile:
            profiles[dev_name] = profile_step(G, photo, perceptual, device, args.repeats)

    print(f"\nPTI on one 64 px photo ({desc}); {args.pivot_steps} W-projection steps + {args.tune_steps} tuning "
          f"steps, locality {'off' if args.no_locality else 'on'}, early stop off; median of the runs.\n")
    print("| device | threads | pivot (s) | tune (s) | total (s) | ms / pivot step | ms / tune step "
          "| CPU time (s) | runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dev, th, piv, tun, tot, mp, mt, cpu, n in rows:
        print(f"| {dev} | {th} | {piv:.1f} | {tun:.1f} | {tot:.1f} | {mp:.0f} | {mt:.0f} | {cpu:.1f} | {n} |")
    print("\nWall-clock medians; CPU time = process time of both phases, summed over threads (on a shared "
          "machine it is closer to the work done than the wall clock, which includes waiting for a core).")
    for dev, parts in profiles.items():
        print(f"\nOne step's parts on {dev} (median of {args.repeats}):\n")
        print("| part | wall ms | CPU ms |")
        print("|---|---|---|")
        for name, (w, c) in parts.items():
            print(f"| {name} | {1000 * w:.1f} | {1000 * c:.1f} |")
    report["table"] = rows
    report["profile"] = profiles
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
