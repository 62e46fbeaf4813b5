"""How fast does the world train here, and where does a training step spend its time?

The first lent H200 trained world64 at only 294 images/s (batch 64, bfloat16): at that batch a
step is bound by the host launching kernels (the profile of a lent H100: about 55 ms of GPU work
per step), and larger batches paid for NCHW <-> NHWC transposes around every convolution. cuDNN's
autotuning, channels_last activations (``--channels-last``) and a step that never waits for the GPU
took a lent H100 to about 1400 images/s at batch 256 (docs/gpu/README.md). This bench times batches
and layouts and names the operators that cost the most:

    python bench/train_step.py --device cuda --batches 64,256,1024 --profile 64
    python bench/train_step.py --device cpu --batches 4 --steps 2          # every path, on the CPU
    python bench/train_step.py --batches 64,128,256 --layouts contiguous,channels_last --pick flags.txt

``--layouts`` also times each batch with the activations in channels_last (``--channels-last`` of
``facelab.train.gan``), and ``--pick FILE`` writes the fastest batch and layout as training flags,
which ``scripts/gpu_world.sh run`` passes on.

For each batch size it builds a :class:`facelab.train.gan.Trainer` with the committed run's recipe
(``--disc both``, bfloat16 autocast on CUDA), warms up, then times ``--steps`` whole training steps
(generator step, the lazy regularisers on their schedule, both discriminators, the EMA), with the
device synchronised around them: images/s and ms per step. ``--profile B`` then records
``--steps`` steps at batch B with ``torch.profiler`` and prints the operators that took the most
time on the device (CUDA) or the CPU, self time, so that a kernel that runs per image (a Python
loop, a slow grouped or depthwise convolution) stands out. Weights are the committed checkpoint's
when it exists (timings do not depend on them), else random; the trainers' run folders are
temporary and removed at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facelab.train.gan import Trainer, TrainConfig  # noqa: E402
from facelab.utils import get_device  # noqa: E402

CHECKPOINT = ROOT / "checkpoints" / "world64" / "checkpoint.pt"


def trainer_for(batch: int, device, disc: str, scratch: Path, *, channels_last: bool = False) -> Trainer:
    """A trainer with the committed run's weights; its run folder lies under ``scratch`` (step() writes nothing there)."""
    cfg = TrainConfig(preset="world64", batch=batch, disc=disc, channels_last=channels_last)
    t = Trainer(cfg, scratch / f"batch{batch}", device=device, progress=False)
    if CHECKPOINT.exists():
        t.load(CHECKPOINT, warm_start=True)
    return t


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(t: Trainer, steps: int, warmup: int) -> float:
    """Seconds per training step: the mean over ``steps``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        t.step()
    sync(t.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        t.step()
    sync(t.device)
    return (time.perf_counter() - t0) / steps


def profile(t: Trainer, steps: int, rows: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if t.device.type == "cuda" else [])
    t.step()
    sync(t.device)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            t.step()
        sync(t.device)
    key = "self_cuda_time_total" if t.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--batches", default="64,256", help="comma-separated batch sizes")
    p.add_argument("--steps", type=int, default=10, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=20,
                   help="untimed steps first: enough for every shape of the step (path length every 4th, "
                        "R1 every 16th) to be autotuned by cuDNN before the clock starts")
    p.add_argument("--disc", default="both", help="stylegan2, projected or both (the committed run's)")
    p.add_argument("--profile", type=int, default=0, metavar="B", help="also profile steps at batch B")
    p.add_argument("--rows", type=int, default=25, help="operators in the profile table")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--layouts", default="contiguous", help="comma-separated: contiguous, channels_last")
    p.add_argument("--pick", type=Path, default=None, metavar="FILE",
                   help="write the fastest setting as training flags (e.g. '--batch 256 --channels-last') to FILE")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = get_device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"torch {torch.__version__}, {name}, disc {a.disc}, weights "
          f"{'checkpoints/world64' if CHECKPOINT.exists() else 'random'}")
    layouts = a.layouts.split(",")
    if not set(layouts) <= {"contiguous", "channels_last"}:
        raise SystemExit(f"error: --layouts takes contiguous and/or channels_last, got {a.layouts!r}")
    print("\n| batch | layout | ms / step | images / s |\n|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="facelab-bench-") as scratch:
        for b in (int(x) for x in a.batches.split(",")):
            for layout in layouts:
                t = trainer_for(b, device, a.disc, Path(scratch), channels_last=layout == "channels_last")
                sec = time_steps(t, a.steps, a.warmup)
                del t
                rows.append({"batch": b, "layout": layout, "ms_per_step": round(sec * 1000, 1),
                             "images_per_s": round(b / sec, 1)})
                print(f"| {b} | {layout} | {sec * 1000:.1f} | {b / sec:.1f} |", flush=True)
        if a.pick:
            best = max(rows, key=lambda r: r["images_per_s"])
            flags = f"--batch {best['batch']}" + (" --channels-last" if best["layout"] == "channels_last" else "")
            a.pick.write_text(flags + "\n")
            print(f"fastest: {flags} ({best['images_per_s']:.0f} images/s)")
        out = {"device": name, "torch": torch.__version__, "disc": a.disc, "rows": rows}
        if a.profile:
            table = profile(trainer_for(a.profile, device, a.disc, Path(scratch)), a.steps, a.rows)
            print(f"\nTop operators at batch {a.profile}, {a.steps} steps, by self time on {device.type}:\n{table}")
            out["profile"] = table
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
