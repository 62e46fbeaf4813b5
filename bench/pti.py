"""How long does Pivotal Tuning Inversion take? One photo, the paper's step counts.

    python bench/pti.py                          # CPU (2 threads) and CUDA when present, 3 runs each
    python bench/pti.py --device cpu --runs 1 --profile
    python bench/pti.py --threads 1 --json pti_bench.json
    python bench/pti.py --device cpu --runs 0 --floor           # the least time the step counts can take
    python bench/pti.py --device cuda --generator random:ffhq-config-f   # the 1024 px FFHQ network
    python bench/pti.py --device cpu --runs 0 --encoder          # the paper's PTI vs encoder pivots + early stop

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

With ``--floor`` it also measures the least time the step counts can take on the CPU: the
floating-point work of a real projection step and a real tuning step (``FlopCounterMode``), the
time spent inside their convolution kernels (``torch.profiler``), and the rate of a large matrix
product on the same cores. Work divided by that rate is a bound no implementation of these two
networks can beat on these cores; the convolution kernels at their measured speed are what would
remain if everything else (activations, normalisation, Adam, Python) cost nothing.

CPU timings on a shared machine are noisy: other jobs take cores, and on a virtual machine the
host's other tenants change the speed of the same code by tens of percent from one minute to the
next. The medians are what to quote, together with the thread count the table prints.

Measured on the course's 2-core build machine (Xeon, AVX-512, no other job of ours running),
Grace Hopper, defaults (450 + 350 steps, locality on, early stop off), torch 2.14.1,
``python bench/pti.py --device cpu --runs 3 --profile --floor``:

| device | threads | pivot (s) | tune (s) | total (s) | ms / pivot step | ms / tune step | CPU time (s) | runs |
|---|---|---|---|---|---|---|---|---|
| cpu | 2 | 37.7 | 57.9 | 96.9 | 84 | 165 | 186.7 | 3 |

| | projection step | tuning step | all steps |
|---|---|---|---|
| work (FlopCounterMode) | 3.28 GFLOP | 9.53 GFLOP | 4.81 TFLOP |
| time inside convolution kernels | 40.2 ms | 81.6 ms | 46.6 s |

The best 2048 x 2048 matrix product on these cores ran at 211, 276 and 327 GFLOP/s in three
``--floor`` runs (it varies with the host's load), so the 4.81 TFLOP alone take 14.7-22.8 s: a
15 s run would need every operation of the paper's 800 steps, with no overhead at all, to run as
efficiently as a large matrix product, while the convolutions of these small batches run at about
a third of that (their kernels alone took 40-47 s). The generator alone (forward and
input-gradient for a projection step, forward and both gradients for the pivot plus the
regulariser latent, and the frozen copy's forward, for a tuning step) is 3.2 TFLOP of the work.
The convolution kernels take about half of each step; what is left (activations, modulation,
Adam, Python dispatch) a compiler can shrink: with ``--compile``, ``torch.compile`` cut the tuned
generator's forward + backward (batch 2) from 74.6 to 42.6 ms, after a first compilation of 35 s
(with inductor's on-disk cache already warm from an earlier run). facelab does not compile by
default: the first compilation costs as much as it saves on one photo, and needs a C++ compiler.

What a user waits for, ``pti.tune(G, photo)`` with the defaults (early stop then at 0.32; now 0.33),
``--early-stop --runs 2``: 36.0 s of projection and 48.0 s for 278 tuning steps, 84 s in all
(the first run; the second shared the cores with a test run and is not quoted).

Per tuning step (``--profile``): the tuned generator's forward + backward (pivot and regulariser
latent in one batch of 2) 68 ms, the perceptual network's forward + backward 56 ms, the frozen
generator 24 ms, the regulariser target's perceptual features 12 ms; a projection step 87 ms.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
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
    """[1, 3, R, R] in [-1, 1] (R: the generator's resolution) and a description."""
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
        return G.synthesis(ws, noise_mode="const").cpu(), f"a face of the generator ({G.img_resolution} px, psi 0.7, z seed 0)"


def bench_generator(name: str, device) -> "facelab.Generator":
    """``world64`` (or any name/path ``load_generator`` takes), or ``random:PRESET`` — a generator of that
    architecture with random weights (``random:ffhq-config-f``: the 1024 px FFHQ network), which times
    the same work as the trained one since early stop is off."""
    if name.startswith("random:"):
        torch.manual_seed(0)
        return facelab.Generator(facelab.get_config(name.split(":", 1)[1])).eval().to(device)
    return facelab.load_generator(name, device=device)


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
    from facelab.latents import noise_maps
    from facelab.metrics import ReferenceDistance
    from facelab.pti import ball_latents

    G_t = copy.deepcopy(G).requires_grad_(False)
    if device.type == "cpu" and pti.CHANNELS_LAST_ON_CPU:  # as tune() does
        G_t = G_t.to(memory_format=torch.channels_last)
    G_t.synthesis.requires_grad_(True)
    target = photo.to(device)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pivots = G.mapping(torch.randn(1, G.z_dim, generator=g).to(device))
        w_r = ball_latents(pivots, G.mapping(torch.randn(1, G.z_dim, generator=g).to(device), truncation_psi=0.5), 30.0)
    ws2 = torch.cat([pivots, w_r])
    noise2 = [torch.cat([a, b]) for a, b in zip(noise_maps(G, 1, "const", device), noise_maps(G, 1, "none", device))]
    against = ReferenceDistance(perceptual)
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


# Kernels that do a convolution's arithmetic (forward, input and weight gradients) on the CPU. The
# wrappers ``aten::conv2d`` / ``convolution`` / ``_convolution`` only dispatch and are left out.
_CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                 "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d",
                 "aten::slow_conv_transpose2d_backward", "aten::mkldnn_convolution_backward")


def compile_probe(G, repeats: int) -> dict:
    """The tuned generator's forward + backward (batch 2, as in a tuning step), eager vs ``torch.compile``."""
    G_t = copy.deepcopy(G).cpu().requires_grad_(False)
    G_t.synthesis.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G_t.mapping(torch.randn(2, G_t.z_dim, generator=g))

    def render(w):
        return G_t.synthesis(w, noise_mode="const")

    def step(fn):
        fn(ws).square().mean().backward()

    eager, _ = timed(lambda: step(render), torch.device("cpu"), repeats)
    compiled_fn = torch.compile(render)
    t0 = time.perf_counter()
    step(compiled_fn)
    first = time.perf_counter() - t0
    compiled, _ = timed(lambda: step(compiled_fn), torch.device("cpu"), repeats)
    return {"eager_ms": 1000 * eager, "compiled_ms": 1000 * compiled, "compile_s": first}


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large float32 matrix product on the CPU: the best of ``repeats`` (the most these
    cores sustain; on a shared host the median can be half of it)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def floor(G, photo, perceptual, pivot_steps: int, tune_steps: int, locality: bool, k: int = 8) -> dict:
    """What the paper's step counts cost at the least, on the CPU.

    Runs ``k`` real projection steps and ``k`` real tuning steps (``facelab.invert.project``,
    ``facelab.pti.tune``), counting their floating-point operations (``FlopCounterMode``: every
    convolution and matrix product, forward and backward) and, under ``torch.profiler``, the
    wall time spent inside convolution kernels. Two lower bounds for ``pivot_steps`` + ``tune_steps``:
    the FLOPs at the rate of a large matrix product (no implementation of these networks on these
    cores can beat it), and the convolution kernels alone at their measured speed (what remains if
    every other operation -- activations, normalisation, Adam, Python -- cost nothing).
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    config = pti.PTIConfig(pivot_steps=k, tune_steps=k, early_stop=None, locality=locality)

    def proj():
        return project(G, photo, space="w", steps=k, lr=config.pivot_lr, perceptual=perceptual, progress=False)

    pivots = proj()

    def tune():
        pti.tune(G, photo, pivots=pivots, config=config, perceptual=perceptual, progress=False)

    out = {}
    for name, fn in (("pivot", proj), ("tune", tune)):
        fn()  # warm-up
        with FlopCounterMode(display=False) as counter:
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        conv_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in _CONV_KERNELS)
        out[name] = {"gflop_per_step": counter.get_total_flops() / k / 1e9, "conv_ms_per_step": conv_us / k / 1e3}
    rate = matmul_rate()
    flops = (pivot_steps * out["pivot"]["gflop_per_step"] + tune_steps * out["tune"]["gflop_per_step"]) * 1e9
    out["matmul_gflops"] = rate / 1e9
    out["total_tflop"] = flops / 1e12
    out["floor_at_matmul_rate_s"] = flops / rate
    out["floor_conv_kernels_s"] = (pivot_steps * out["pivot"]["conv_ms_per_step"]
                                   + tune_steps * out["tune"]["conv_ms_per_step"]) / 1e3
    return out


def encoder_comparison(G, photo, perceptual, device, encoder: str, tune_steps: int = 350) -> dict:
    """One photo, PTI four ways: the paper's (450-step W pivot, ``tune_steps`` tuning steps, no early
    stop); ``pti.tune``'s defaults (the same with early stop); facelab's fast path (the encoder's pivot
    in one pass, tuning with the same early stop); and the fast path with the locality regulariser
    every 4th step (the official code's ``locality_regularization_interval``). For each: wall time, the final distortion of the tuned
    reconstruction to the photo (dlib-lpips, MSE, identity) and how much the tuning moved 16 random
    other faces (``pti.locality_change``, dlib-lpips). Target (#19): the fast path in <= 40 s on 2 CPU
    cores with a final dlib-lpips at most 5 % above the 450-step-pivot run's (compared like for like: both
    with the same early stop; the ratio to the run that tunes all steps is reported too)."""
    from facelab.hub import load_encoder
    from facelab.metrics import distortion

    E = load_encoder(encoder, device=device)
    fast = pti.PTIConfig(tune_steps=tune_steps)
    runs = {"paper: 450-step W pivot + all tuning steps": dict(config=fast.replace(early_stop=None)),
            "450-step W pivot + tuning, early stop (pti.tune's defaults)": dict(config=fast),
            "encoder pivot + tuning, early stop": dict(config=fast, pivots="encoder", encoder=E),
            "... locality every 4th step": dict(config=fast.replace(locality_every=4), pivots="encoder", encoder=E)}
    out = {}
    for name, kw in runs.items():
        sync(device)
        t0 = time.perf_counter()
        res = pti.tune(G, photo, perceptual=perceptual, progress=False, **kw)
        sync(device)
        seconds = time.perf_counter() - t0
        d = distortion(res.reconstruct().clamp(-1, 1), photo.to(device))
        moved = pti.locality_change(G, res.G, res.pivots, n=16)
        out[name] = {"seconds": seconds, "pivot_s": res.pivot_seconds, "tune_s": res.tune_seconds,
                     "tune_steps": res.steps_run, "perceptual": float(d["perceptual"].mean()),
                     "mse": float(d["mse"].mean()), "identity": float(d["identity"].mean()),
                     "others_moved": float(moved.random_perceptual)}
        print(f"{name}: {seconds:.1f} s ({res.steps_run} tuning steps), dlib-lpips {out[name]['perceptual']:.3f}",
              flush=True)
    paper, default, fast_run, _ = out.values()
    out["verdict"] = {"time_s": fast_run["seconds"], "time_target_s": 40.0, "lpips_target_ratio": 1.05,
                      "lpips_ratio": fast_run["perceptual"] / default["perceptual"],
                      "lpips_ratio_to_all_steps": fast_run["perceptual"] / paper["perceptual"]}
    return out


def print_encoder_comparison(c: dict) -> None:
    print("\n| PTI | total (s) | pivot (s) | tuning (s) | tuning steps | dlib-lpips | MSE | identity | other faces "
          "moved (dlib-lpips) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in c.items():
        if name != "verdict":
            print(f"| {name} | {r['seconds']:.1f} | {r['pivot_s']:.1f} | {r['tune_s']:.1f} | {r['tune_steps']} | "
                  f"{r['perceptual']:.3f} | {r['mse']:.4f} | {r['identity']:.3f} | {r['others_moved']:.3f} |")
    v = c["verdict"]
    ok_t, ok_d = v["time_s"] <= v["time_target_s"], v["lpips_ratio"] <= v["lpips_target_ratio"]
    print(f"\nTarget: encoder-pivot PTI <= {v['time_target_s']:.0f} s: {v['time_s']:.1f} s, "
          f"{'met' if ok_t else 'NOT met'}; final dlib-lpips <= {v['lpips_target_ratio']:.2f}x the 450-step-pivot "
          f"run's with the same early stop: {v['lpips_ratio']:.3f}x, {'met' if ok_d else 'NOT met'} "
          f"({v['lpips_ratio_to_all_steps']:.3f}x the run that tunes all steps).")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda, or all (cpu + cuda when present)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--generator", default="world64",
                    help="world64, a generator name/path, or random:PRESET (e.g. random:ffhq-config-f, 1024 px)")
    ap.add_argument("--pivot-steps", type=int, default=450)
    ap.add_argument("--tune-steps", type=int, default=350)
    ap.add_argument("--no-locality", action="store_true", help="time without the locality regulariser")
    ap.add_argument("--early-stop", action="store_true",
                    help="use PTIConfig's default early stop (what pti.tune(G, photo) does) instead of all steps")
    ap.add_argument("--compile", action="store_true",
                    help="also time the tuned generator's forward + backward under torch.compile (CPU)")
    ap.add_argument("--photo", default="grace_hopper",
                    help="an image path, grace_hopper, world, or a saved aligned batch (.pt)")
    ap.add_argument("--profile", action="store_true", help="also time the parts of one step")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per part for --profile")
    ap.add_argument("--floor", action="store_true",
                    help="also measure the least time the step counts can take on the CPU (FLOPs, convolution kernels)")
    ap.add_argument("--encoder", nargs="?", const="auto", default=None,
                    help="also compare the paper's PTI with encoder-pivot PTI + early stop on the photo (encoder: a "
                         "weights name or path; default the generator's, e.g. encoder_world64)")
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
        G = bench_generator(args.generator, device)
        perceptual = PerceptualDistance(device=device)
        photo, desc = load_photo(args.photo, G)
        config = pti.PTIConfig(pivot_steps=args.pivot_steps, tune_steps=args.tune_steps,
                               early_stop=pti.EARLY_STOP_DLIB if args.early_stop else None,
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
            runs.append((w1 - w0, w2 - w1, w2 - w0, c1 - c0, c2 - c1, res.steps_run))
            print(f"{dev_name} run {i + 1}/{args.runs}: pivot {w1 - w0:.1f} s (cpu {c1 - c0:.1f} s), "
                  f"tune {w2 - w1:.1f} s (cpu {c2 - c1:.1f} s, {res.steps_run} steps); "
                  f"final perceptual {res.history['perceptual'][-1]:.3f}", flush=True)
        threads = torch.get_num_threads() if dev_name == "cpu" else "-"
        if runs:  # --runs 0: only the --profile table
            piv, tun, tot, cpiv, ctun, steps = (statistics.median(r[k] for r in runs) for k in range(6))
            rows.append((dev_name, threads, piv, tun, tot, 1000 * piv / max(args.pivot_steps, 1),
                         1000 * tun / max(steps, 1), cpiv + ctun, len(runs), steps))
        report["runs"].append({"device": dev_name, "threads": threads, "photo": desc, "runs": runs})
        if args.profile:
            profiles[dev_name] = profile_step(G, photo, perceptual, device, args.repeats)
        if args.compile and dev_name == "cpu":
            report["compile"] = compile_probe(G, args.repeats)
        if args.floor and dev_name == "cpu":
            report["floor"] = floor(G, photo, perceptual, args.pivot_steps, args.tune_steps, not args.no_locality)
        if args.encoder:
            name = f"encoder_{args.generator}" if args.encoder == "auto" else args.encoder
            report.setdefault("encoder", {})[dev_name] = encoder_comparison(G, photo, perceptual, device, name,
                                                                            args.tune_steps)

    stop = f"early stop at {pti.EARLY_STOP_DLIB}" if args.early_stop else "early stop off"
    print(f"\nPTI on one {G.img_resolution} px photo ({desc}); {args.pivot_steps} W-projection steps + up to {args.tune_steps} "
          f"tuning steps, locality {'off' if args.no_locality else 'on'}, {stop}; median of the runs.\n")
    print("| device | threads | pivot (s) | tune (s) | total (s) | tuning steps | ms / pivot step | ms / tune step "
          "| CPU time (s) | runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dev, th, piv, tun, tot, mp, mt, cpu, n, steps in rows:
        print(f"| {dev} | {th} | {piv:.1f} | {tun:.1f} | {tot:.1f} | {steps:.0f} | {mp:.0f} | {mt:.0f} | {cpu:.1f} | {n} |")
    print("\nWall-clock medians; CPU time = process time of both phases, summed over threads (on a shared "
          "machine it is closer to the work done than the wall clock, which includes waiting for a core).")
    for dev, parts in profiles.items():
        print(f"\nOne step's parts on {dev} (median of {args.repeats}):\n")
        print("| part | wall ms | CPU ms |")
        print("|---|---|---|")
        for name, (w, c) in parts.items():
            print(f"| {name} | {1000 * w:.1f} | {1000 * c:.1f} |")
    if "floor" in report:
        f = report["floor"]
        print(f"\nLower bounds on the CPU ({torch.get_num_threads()} threads) for {args.pivot_steps} + {args.tune_steps} "
              "steps:\n")
        print("| | projection step | tuning step | all steps |")
        print("|---|---|---|---|")
        print(f"| work (FlopCounterMode) | {f['pivot']['gflop_per_step']:.2f} GFLOP | "
              f"{f['tune']['gflop_per_step']:.2f} GFLOP | {f['total_tflop']:.2f} TFLOP |")
        print(f"| time inside convolution kernels (torch.profiler) | {f['pivot']['conv_ms_per_step']:.1f} ms "
              f"| {f['tune']['conv_ms_per_step']:.1f} ms | {f['floor_conv_kernels_s']:.1f} s |")
        print(f"\nAt the rate of a 2048 x 2048 matrix product ({f['matmul_gflops']:.0f} GFLOP/s, measured now) "
              f"those FLOPs take {f['floor_at_matmul_rate_s']:.1f} s; the convolution kernels alone, at their "
              f"measured speed, take {f['floor_conv_kernels_s']:.1f} s.")
    if "compile" in report:
        c = report["compile"]
        print(f"\ntorch.compile (CPU, inductor): the tuned generator's forward + backward (batch 2) "
              f"{c['eager_ms']:.1f} ms eager, {c['compiled_ms']:.1f} ms compiled; the first compilation took "
              f"{c['compile_s']:.0f} s.")
    for dev, c in report.get("encoder", {}).items():
        print(f"\nEncoder pivots vs the paper's pivot on {dev} ({torch.get_num_threads()} threads), one run each:")
        print_encoder_comparison(c)
    report["table"] = rows
    report["profile"] = profiles
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
