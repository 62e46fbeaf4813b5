"""Does a face's MTCNN detection depend on the other faces in its batch? A probe of the teacher's detector.

    python scripts/probe_mtcnn_batch.py [--faces 500] [--seed 0] [--batches 64,50,1]

Renders ``--faces`` world64 faces as the label stage does (:func:`facelab.train.regressor.render_chunk`)
and runs facenet-pytorch's own batched ``MTCNN.detect`` on them in batches of each size, and
:func:`facelab.nets.attributes.detect_faces` (one image at a time, the reference). For each it prints
how many faces' boxes or landmarks differ from the reference's by more than 10⁻³ px, the largest box
difference, and the detection time. A face's labels (age, gender, smile crops, pose) all start from
its box and landmarks, so a face whose box moves with the batch gets batch-dependent labels: this
probe is why ``detect_faces`` detects one image at a time.
"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import torch

from facelab.hub import load_generator
from facelab.imaging import to_uint8
from facelab.nets.attributes import Faces, _faces_from_mtcnn, detect_faces, load_mtcnn
from facelab.train.regressor import render_chunk


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", default="64,50,1")
    args = p.parse_args(argv)
    G = load_generator("world64", device="cpu").eval()
    # detect_faces quantises to uint8 itself, exactly as the label stage stores its faces
    batches = render_chunk(G, 0, psi_min=0.5, seed=args.seed, batch=100)  # the chunk's first faces, rendered alone
    x = torch.cat([x for x, _ in itertools.islice(batches, math.ceil(args.faces / 100))])[:args.faces]
    runs = [("one at a time (detect_faces)", lambda chunk: detect_faces(chunk), 1)]
    runs += [(f"batches of {bs} (MTCNN.detect)", batched, bs) for bs in (int(b) for b in args.batches.split(","))]
    detect_faces(x[:1])  # build MTCNN before any clock starts
    results = []
    for name, detect, bs in runs:
        t0 = time.perf_counter()
        found = [detect(chunk) for chunk in x.split(bs)]
        results.append((name, torch.cat([f.boxes for f in found]), torch.cat([f.points for f in found]),
                        time.perf_counter() - t0))
    (ref, boxes0, points0, seconds0), *others = results
    print(f"{x.shape[0]} world64 faces, {torch.get_num_threads()} threads; reference: {ref}")
    print("| detection | faces whose box or landmarks move > 1e-3 px | largest box move (px) | seconds |")
    print("|---|---|---|---|")
    print(f"| {ref} | – | – | {seconds0:.1f} |")
    for name, boxes, points, seconds in others:
        moved = torch.maximum((boxes - boxes0).abs().amax(1), (points - points0).abs().flatten(1).amax(1))
        both = ~torch.isnan(moved)  # found in both runs (a face found in one only counts as moved)
        n_moved = int((moved[both] > 1e-3).sum()) + int((torch.isnan(boxes[:, 0]) != torch.isnan(boxes0[:, 0])).sum())
        largest = float(moved[both].max()) if both.any() else float("nan")
        print(f"| {name} | {n_moved} of {x.shape[0]} | {largest:.2f} | {seconds:.1f} |")


def batched(chunk: torch.Tensor) -> Faces:
    """facenet-pytorch's MTCNN over the whole chunk at once (what ``detect_faces`` did before)."""
    return _faces_from_mtcnn(*load_mtcnn("cpu").detect(to_uint8(chunk), landmarks=True))

if __name__ == "__main__":
    main()
