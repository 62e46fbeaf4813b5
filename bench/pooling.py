"""Max pooling on a CPU: ``F.max_pool2d`` against facelab's ``max_pool2d`` (a channels_last copy).

For the pools facelab's perception networks run (MTCNN's, the FER mini-Xception's, the dlib ResNet's),
this prints milliseconds per call of each, their ratio, and whether they agree exactly:

    python bench/pooling.py                 # one thread
    python bench/pooling.py --threads 2

``bench/labelers.py`` measures what that does to the teacher labelers end to end.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from facelab.nets.resample import max_pool2d

# (who pools this, shape [N, C, H, W], kernel, stride, ceil_mode): typical calls of each network
CASES = [
    ("MTCNN PNet, 38 px pyramid level", (1, 10, 36, 36), 2, 2, True),
    ("MTCNN RNet, 30 candidates", (30, 28, 22, 22), 3, 2, True),
    ("MTCNN RNet, second pool", (30, 48, 9, 9), 3, 2, True),
    ("MTCNN ONet, 10 candidates", (10, 32, 46, 46), 3, 2, True),
    ("MTCNN ONet, second pool", (10, 64, 21, 21), 3, 2, True),
    ("FER mini-Xception, first block", (64, 16, 65, 65), 3, 2, False),
    ("dlib ResNet stem, 64 chips", (64, 32, 72, 72), 3, 2, False),
]


def per_call(fn, x, repeats: int) -> float:
    """Milliseconds per call of ``fn(x)`` (best of three rounds of ``repeats``)."""
    fn(x)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), torch {torch.__version__}, {platform.machine()}\n")
    print("| pool | shape | kernel, stride | F.max_pool2d (ms) | facelab max_pool2d (ms) | faster by | equal |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for who, shape, k, s, ceil in CASES:
        x = torch.randn(shape, generator=g)
        plain = per_call(lambda t: F.max_pool2d(t, k, s, ceil_mode=ceil), x, args.repeats)
        fast = per_call(lambda t: max_pool2d(t, k, s, ceil_mode=ceil), x, args.repeats)
        equal = torch.equal(F.max_pool2d(x, k, s, ceil_mode=ceil), max_pool2d(x, k, s, ceil_mode=ceil))
        print(f"| {who} | {list(shape)} | {k}, {s} | {plain:.3f} | {fast:.3f} | {plain / fast:.1f}x | {equal} |")


if __name__ == "__main__":
    main()
