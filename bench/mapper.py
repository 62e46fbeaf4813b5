"""Latent-to-Latent mapper speed: time per edit (one forward pass) and training throughput.

    python bench/mapper.py                  # CPU (and CUDA when present)
    python bench/mapper.py --device cpu --train-steps 5

Time per edit is the mapper alone (W+ in, W+ out) and the mapper plus rendering the edited face,
median over repeats, batch 1 and 16. Training throughput is measured with the shipped world64
generator, H and the dlib identity port, at the default batch size, on a throw-away run.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import facelab as fl
from facelab.mapper import LatentMapper, MapperConfig, load_mapper
from facelab.train import mapper as tm


def timed(fn, repeats: int, device) -> float:
    fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1000


def bench(device: torch.device, repeats: int, train_steps: int) -> list[str]:
    G = fl.load_generator("world64", device=device)
    try:
        m = load_mapper(device=device)
        which = "shipped"
    except KeyError:
        m = LatentMapper(G.num_ws, G.w_dim, MapperConfig()).to(device).eval()
        which = "untrained"
    rows = []
    for batch in (1, 16):
        ws = G.mapping(torch.randn(batch, G.z_dim, device=device))
        with torch.no_grad():
            edit = timed(lambda: m.edit(ws, age=10.0, smile=0.3), repeats, device)
            both = timed(lambda: G.synthesis(m.edit(ws, age=10.0), noise_mode="const"), repeats, device)
        rows.append(f"| {device.type} | {which} | edit | {batch} | {edit:.2f} | {edit / batch:.3f} |")
        rows.append(f"| {device.type} | {which} | edit + render | {batch} | {both:.2f} | {both / batch:.3f} |")
    if train_steps:
        cfg = MapperConfig()
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            tm.train(run, MapperConfig(steps=1), device=device, progress=False)  # statistics + warm-up step
            t0 = time.perf_counter()
            tm.train(run, MapperConfig(steps=1 + train_steps), device=device, progress=False)
            per = (time.perf_counter() - t0) / train_steps
        rows.append(f"| {device.type} | training | step | {cfg.batch_size} | {per * 1000:.0f} | "
                    f"{per * 1000 / cfg.batch_size:.1f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="all", help="cpu, cuda or all")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--train-steps", type=int, default=5)
    args = p.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| device | mapper | what | batch | ms per call | ms per latent |\n|---|---|---|---|---|---|")
    for d in devices:
        if d == "cuda" and not torch.cuda.is_available():
            print("| cuda | – | skipped: no GPU | | | |")
            continue
        for row in bench(torch.device(d), args.repeats, args.train_steps):
            print(row)


if __name__ == "__main__":
    main()
