"""Does facelab's perceptual distance rank distortions sensibly? (CPU, about a minute.)

    python bench/perceptual_validation.py                                   # prints markdown tables
    python bench/perceptual_validation.py --card facelab/weights/dlib_resnet.md

Faces, all 64 px in the world's crop (``facelab.geometry.WORLD_TEMPLATE``):

* two real public-domain portraits, matplotlib's ``grace_hopper.jpg`` and scikit-image's
  ``data.astronaut()``: MTCNN (``facelab.nets.attributes.detect_faces``) finds the eyes and nose,
  and one similarity transform sends them onto the world's mean landmarks (a plain stand-in for
  ``facelab.faces``' photo alignment);
* ``--teacher`` (16) faces of the DCGAN teacher (``sample_teacher``, seed 7).

Distortions of each face: a shift by 1 and by 2 px (right; the edge column repeats), Gaussian noise
(sigma 0.1 in [-1, 1] units, clamped), a Gaussian blur (sigma 1.5 px) and a different face (the
next face of the same set; for the photos, the other photo). For each: the perceptual distance
(``facelab.metrics.PerceptualDistance``, "dlib-lpips"), per-image MSE and the dlib identity cosine
(``identity_similarity``). The check: distance(shift 1 px) < noise < blur < different face, on the
teacher faces and on the photos (``--strict``: exit 1 if it fails), with each layer's share of
the distance to show where a failure comes from. Also checks ``world_chips`` and its chip template against
dlib's own chips of the photos (``tests/data``) and, if dlib is installed, the padding arithmetic
against ``dlib.get_face_chip_details``; and times the distance on 64 px images (forward, forward +
backward) with torch's current thread count.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import facelab.metrics as M
from facelab.imaging import to_tensor
from facelab.geometry import WORLD_TEMPLATE, similarity, warp
from facelab.nets.attributes import detect_faces
from facelab.nets.teacher import sample_teacher

START, END = "<!-- perceptual:start -->", "<!-- perceptual:end -->"
ORDER = ("shift 1 px", "noise σ=0.1", "blur σ=1.5 px", "different face")


def load_photos() -> dict[str, torch.Tensor]:
    """The portraits as [1, 3, H, W] in [-1, 1]."""
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
        photos = {"grace_hopper": to_tensor(im)}
    from skimage import data
    photos["astronaut"] = to_tensor(data.astronaut())
    return photos


def world_crop(photo: torch.Tensor, size: int = 64) -> torch.Tensor:
    """[1, 3, size, size]: the photo's MTCNN eyes and nose sent onto the world's mean landmarks."""
    faces = detect_faces(photo)
    if not bool(faces.found[0]):
        raise RuntimeError("MTCNN found no face in the photo")
    z, t = similarity(WORLD_TEMPLATE[:3], faces.points[:, :3])  # crop unit -> photo pixel
    return warp(photo, z, t, size, fill="border")


@torch.no_grad()
def chip_check(photos: dict[str, torch.Tensor], net) -> str:
    """Identity cosine between dlib's own chip of each photo (tests/data) and world_chips of its world crop."""
    lines = ["| photo | world_chips of a 64 px crop | of a 256 px crop | plain resize of the 64 px crop to 150 |",
             "|---|---|---|---|"]
    refs = {}
    for name, photo in photos.items():
        path = Path(__file__).resolve().parents[1] / "tests" / "data" / f"chip150_{name}.png"
        if not path.is_file():
            continue
        ref = refs[name] = net(to_tensor(path))
        c64, c256 = world_crop(photo, 64), world_crop(photo, 256)
        cos = [float((net(c) * ref).sum()) for c in (M.world_chips(c64), M.world_chips(c256),
                                                      F.interpolate(c64, size=(150, 150), mode="bilinear"))]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cos) + " |")
    if len(refs) == 2:
        a, b = refs.values()
        lines.append(f"| (dlib's two chips, two different people) | {float((a * b).sum()):.3f} | | |")
    return "\n".join(lines)


@torch.no_grad()
def template_check(photos: dict[str, torch.Tensor]) -> list[str]:
    """Where MTCNN finds eyes and nose on dlib's own chips (padded by 30 px) vs IDENTITY_CHIP_TEMPLATE."""
    notes = []
    for name in photos:
        path = Path(__file__).resolve().parents[1] / "tests" / "data" / f"chip150_{name}.png"
        if path.is_file():
            pad = 30  # MTCNN misplaces landmarks on a face that fills the whole image
            pts = detect_faces(F.pad(to_tensor(path), (pad,) * 4, mode="replicate")).points[0, :3] - pad
            err = (pts - M.IDENTITY_CHIP_TEMPLATE * 150).norm(dim=1)
            notes.append(f"{name}: MTCNN on dlib's chip vs the template: eyes {err[0]:.1f}, {err[1]:.1f} px, "
                         f"nose {err[2]:.1f} px (150 px chip)")
    try:
        import dlib
    except ImportError:
        return notes + ["dlib not installed: get_face_chip_details check skipped"]
    pts = dlib.points([dlib.point(x, y) for x, y in [(150, 100), (120, 101), (80, 100), (110, 101), (115, 140)]])
    det = dlib.full_object_detection(dlib.rectangle(60, 60, 200, 200), pts)
    r2, r25 = (dlib.get_face_chip_details(det, 150, p).rect for p in (0.2, 0.25))
    centre = [((r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2) for r in (r2, r25)]
    notes.append(f"dlib.get_face_chip_details, padding 0.2 vs 0.25: centres {centre[0][0]:.3f}, {centre[0][1]:.3f} "
                 f"vs {centre[1][0]:.3f}, {centre[1][1]:.3f}; width ratio {r2.width() / r25.width():.5f} "
                 f"(1.4 / 1.5 = {1.4 / 1.5:.5f})")
    return notes


def shift(x: torch.Tensor, px: int) -> torch.Tensor:
    """Move the content ``px`` pixels right; the left edge column repeats."""
    return F.pad(x, (px, 0, 0, 0), mode="replicate")[..., :, : x.shape[-1]]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(np.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).repeat(3, 1)  # [3, 2r + 1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k[:, None, None, :], groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k[:, None, :, None], groups=3)


def distortions(x: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "shift 1 px": shift(x, 1),
        "shift 2 px": shift(x, 2),
        "noise σ=0.1": (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
        "blur σ=1.5 px": gaussian_blur(x, 1.5),
        "different face": x.roll(1, dims=0),
    }


@torch.no_grad()
def measure(sets: dict[str, torch.Tensor], metric: M.PerceptualDistance) -> dict:
    """{set: {distortion: (perceptual [n], mse [n], identity cosine [n])}}."""
    out, net = {}, (metric.net if metric.backend == "dlib" else None)
    for name, x in sets.items():
        out[name] = {k: (metric(x, y), M.mse(x, y), M.identity_similarity(x, y, net=net))
                     for k, y in distortions(x).items()}
    return out


@torch.no_grad()
def per_layer(sets: dict[str, torch.Tensor], metric: M.PerceptualDistance) -> dict:
    """{set: {distortion: [mean term of each layer]}}: the summands of the dlib-lpips distance."""
    out = {}
    for name, x in sets.items():
        out[name] = {}
        for k, y in distortions(x).items():
            feats = metric.features(torch.cat([x, y]))  # unit-normalised, one tensor per layer
            n = len(x)
            out[name][k] = [float((f[:n] - f[n:]).square().sum(1).mean((1, 2)).mean()) for f in feats]
    return out


def table(results: dict, metric_name: str) -> str:
    sets = list(results)
    head = ["distortion"] + [f"{metric_name}, {s}" for s in sets] + [f"MSE, {s}" for s in sets] + \
           [f"identity cos, {s}" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in results[sets[0]]:
        cells = [d]
        for i, fmt in ((0, "{:.3f} ± {:.3f}"), (1, "{:.4f} ± {:.4f}"), (2, "{:.3f} ± {:.3f}")):
            for s in sets:
                v = results[s][d][i].double()
                cells.append(fmt.format(float(v.mean()), float(v.std())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layer_table(layers: dict, names: tuple[str, ...]) -> str:
    lines = ["| set | distortion | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for s, r in layers.items():
        for d, vals in r.items():
            lines.append(f"| {s} | {d} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines)


def ordering(means: dict[str, dict[str, float]]) -> tuple[bool, list[str]]:
    """Check ORDER on {set: {distortion: mean distance}}; one note per set."""
    ok, notes = True, []
    for s, r in means.items():
        pairs = [f"{a} < {b}: {'yes' if r[a] < r[b] else 'NO'} ({r[a]:.3f} vs {r[b]:.3f})"
                 for a, b in zip(ORDER, ORDER[1:])]
        ok &= all(r[a] < r[b] for a, b in zip(ORDER, ORDER[1:]))
        notes.append(f"{s}: " + "; ".join(pairs))
    return ok, notes


def timings(metric: M.PerceptualDistance, n: int = 16, repeats: int = 3) -> str:
    x = sample_teacher(2 * n, seed=11)
    a, b = x[:n], x[n:]
    with torch.no_grad():
        metric(a, b)  # warm up
        t = time.perf_counter()
        for _ in range(repeats):
            metric(a, b)
        fwd = (time.perf_counter() - t) / repeats / n
    t = time.perf_counter()
    for _ in range(repeats):
        a_ = a.clone().requires_grad_(True)
        metric(a_, b).sum().backward()
    both = (time.perf_counter() - t) / repeats / n
    return (f"{metric.name} on 64 px images, batch {n}, CPU, {torch.get_num_threads()} torch thread(s): "
            f"{1000 * fwd:.1f} ms per image pair forward, {1000 * both:.1f} ms forward + backward "
            "(gradient to one image of the pair)")


def write_card(card: Path, text: str) -> None:
    block = f"{START}\n{text}\n{END}"
    old = card.read_text()
    if START in old:
        new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    card.write_text(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=int, default=16, help="number of teacher faces")
    ap.add_argument("--card", help="model card to update between the perceptual markers")
    ap.add_argument("--strict", action="store_true", help="exit 1 if the ordering fails on a set")
    args = ap.parse_args()
    t0 = time.time()
    photos = load_photos()
    sets = {"teacher": sample_teacher(args.teacher, seed=7),
            "photos": torch.cat([world_crop(p) for p in photos.values()])}
    metric = M.PerceptualDistance()
    results = measure(sets, metric)
    layers = per_layer(sets, metric)
    parts = [f"`python bench/perceptual_validation.py` ({args.teacher} teacher faces, seed 7; the photos "
             f"{' and '.join(photos)} in the world's 64 px crop); mean ± sd over faces.", "",
             table(results, metric.name), "",
             "(With two photos, the photos' \"different face\" is the same pair both ways, hence sd 0.)", "",
             f"Ordering check ({' < '.join(ORDER)}), {metric.name}:"]
    ok, notes = ordering({s: {d: float(v[0].mean()) for d, v in r.items()} for s, r in results.items()})
    parts += [f"- {n}" for n in notes]
    for s, r in results.items():
        per_face = [all(float(r[a][0][i]) < float(r[b][0][i]) for a, b in zip(ORDER, ORDER[1:]))
                    for i in range(len(r[ORDER[0]][0]))]
        parts.append(f"- {s}: the whole ordering holds for {sum(per_face)} of {len(per_face)} faces individually")
    parts += ["", f"The same by layer (mean term per layer; {metric.name} is their sum):", "",
              layer_table(layers, metric.layers), ""]
    if metric.layers[0] == "stem":
        _, notes = ordering({s: {d: sum(v[1:]) for d, v in r.items()} for s, r in layers.items()})
        parts += ["Without the stem layer (for comparison only; not the shipped setting):"]
        parts += [f"- {n}" for n in notes] + [""]
    try:
        lp = M.PerceptualDistance("lpips")
        parts += ["", table(measure(sets, lp), lp.name)]
    except (ImportError, OSError) as e:
        parts += [f"- real LPIPS (AlexNet) not run: {e}"]
    parts += ["", "Alignment check: identity cosine between the chip dlib itself cuts from each photo "
              "(`tests/data/chip150_*.png`) and our chip of the photo's world crop:", "",
              chip_check(photos, metric.net), ""]
    parts += [f"- {n}" for n in template_check(photos)]
    parts += [f"- speed: {timings(metric)}"]
    text = "\n".join(parts)
    print(text)
    print(f"\n({time.time() - t0:.0f} s)")
    if args.card:
        write_card(Path(args.card), text)
        print("updated", args.card)
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
