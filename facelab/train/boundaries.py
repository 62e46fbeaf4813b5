"""Compute a world's InterFaceGAN boundaries: sample latents, label the faces, fit one SVM per attribute.

    python -m facelab.train.boundaries --n 100000 --spaces w,z --labeler H --rescore-n 64 --C 0.001 \\
        --out facelab/weights/boundaries_world64.pt --work runs/boundaries --ship   # the shipped recipe
    python -m facelab.train.boundaries --n 2000 --labeler random --out /tmp/b.pt   # smoke test, no H needed

Steps (Shen et al., CVPR 2020, Sec. 3 and the reference ``train_boundary.py``): draw ``--n`` seeded
latents (:func:`facelab.interpret.sample_latents`), render them with constant noise and score every
face with the labeler (H by default; ``teacher`` for the slow teacher models; ``random`` for an
untrained H, only to test the pipeline), then fit one boundary per attribute and latent space with
:func:`facelab.interpret.train_boundary` (top/bottom ``--ratio`` of the scores, 70/30 split, linear
SVM). W+ boundaries (``--spaces w,z,w+``) are fitted on separately drawn, style-mixed latents
(``--mixing``), since broadcast W codes only span W's subspace of W+.

Labelling is the slow part (``bench/labelers.py`` measures it; ``docs/world64/labelers.md``); with
``--work DIR`` the scores are kept chunk by chunk (``--chunk`` faces per file), so a stopped run
continues where it stopped and a re-fit with another ``--ratio`` labels nothing.

The report goes into the model card next to ``--out`` (``.md``): per boundary the accuracies of
:class:`facelab.interpret.BoundaryReport`; the correlation between attributes beside the cosine
between their W boundaries (the paper's Table / Fig. on coupled attributes); and a re-scoring
table (:func:`facelab.interpret.rescore` on ``--rescore-n`` held-out latents: the mean change of
every attribute per ``distance_std`` step along every W boundary).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from .. import interpret as I
from ..hub import (PACKAGE_WEIGHTS, atomic_torch_save, is_path, load_file, load_generator, sha256_file, ship_file,
                   weights_path, weights_sha256)
from ..utils import get_device, write_card_section
from .loop import errors_in_one_line
from .regressor import generator_key


def make_labeler(kind: str, *, device, seed: int = 0):
    """(labeler, identifier) for ``H``, ``teacher``, ``random`` (untrained H) or a regressor ``.pt`` path."""
    from ..hub import load_regressor
    from ..nets.regressor import AttributeRegressor

    if kind == "H":
        sha = sha256_file(weights_path("attribute_regressor"))
        return load_regressor(device=device), f"H (attribute_regressor, sha256 {sha[:12]})"
    if kind == "teacher":
        return I.resolve_labeler("teacher"), "teacher (facelab.nets.attributes.label_images)"
    if kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            H = AttributeRegressor()
        label = f"random (untrained AttributeRegressor, seed {seed}; smoke test only)"
        return H.eval().requires_grad_(False).to(device), label
    if is_path(kind):
        path = Path(kind)
        return load_regressor(path, device=device), f"H from {path.name} (sha256 {sha256_file(path)[:12]})"
    raise ValueError(f"--labeler must be H, teacher, random or a regressor .pt file, got {kind!r}")


def labelling_differences(old: dict, new: dict) -> dict:
    """{key: (cached, this run)} where a cached chunk's labelling config differs from this run's.

    The generator is compared as label stamps compare it (:func:`facelab.train.regressor.generator_key`):
    by its weights' digest where both configs have one, else by the file's sha256 ("generator";
    chunks cached before weight digests)."""
    skip = "generator" if generator_key(old, new) == "weights_sha256" else "weights_sha256"
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if k != skip and old.get(k) != new.get(k)}


def label_all(G, n: int, *, space: str, labeler, config: dict, work: Path | None, chunk: int,
              batch_size: int, progress: bool) -> dict[str, torch.Tensor]:
    """Scores of latents ``0 .. n-1`` of the seeded stream, chunk by chunk, cached under ``work``."""
    tag = "wplus" if space == "w+" else "w"
    config = {**config, "mixing": config["mixing"] if space == "w+" else 0.0}  # W scores ignore --mixing
    parts: list[dict[str, torch.Tensor]] = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        path = None if work is None else work / f"scores_{tag}_{start:08d}_{m}.pt"
        if path is not None and path.is_file():
            cached = load_file(path)
            diff = labelling_differences(cached.get("config") or {}, config)
            if diff:
                raise ValueError(f"{path} was labelled differently (cached, this run): {diff}; "
                                 "use another --work directory or delete it")
            parts.append(cached["scores"])
            continue
        t0 = time.time()
        lat = I.sample_latents(G, m, space=space, psi=config["psi"], seed=config["seed"], start=start,
                               mixing=config["mixing"] if space == "w+" else 0.0)
        scores = I.label_latents(G, lat, labeler=labeler, batch_size=batch_size, progress=progress)
        if path is not None:
            atomic_torch_save({"config": config, "scores": scores}, path)
        print(f"{space} latents {start}..{start + m - 1}: labelled in {time.time() - t0:.0f} s", flush=True)
        parts.append(scores)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def card_markdown(boundaries: list[I.Boundary], corr: torch.Tensor, names: list[str], cos: torch.Tensor | None,
                  rescored: I.Rescore | None, meta: dict) -> str:
    lines = ["## How they were made", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "analysis"]
    lines += ["", "## Boundaries", "",
              "Accuracies of the linear SVM (`facelab.interpret.BoundaryReport`): *val* on the held-out 30 % of "
              "the extremes, *remaining* on the samples not chosen (labelled by the score midpoint, as in the "
              "reference code), *all* on every valid sample; *r* is the correlation between a sample's signed "
              "distance and its score; *std* is the spread of the signed distance (a natural edit step).", "",
              "| space | attribute | valid n | per side | train acc | val acc | remaining acc | all acc | r | std |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for b in boundaries:
        r = b.report
        lines.append(f"| {b.space} | {b.attribute} | {r.n_samples} | {r.n_chosen} | {fmt(r.train_accuracy)} | "
                     f"{fmt(r.val_accuracy)} | {fmt(r.remaining_accuracy)} | {fmt(r.all_accuracy)} | "
                     f"{fmt(r.score_correlation)} | {fmt(r.distance_std)} |")
    if cos is not None:
        lines += ["", "## Coupled attributes", "",
                  "Correlation of two attributes' scores over the samples beside the cosine between their W "
                  "boundaries: InterFaceGAN finds the two close, which is why conditional editing "
                  "(`facelab.interpret.project_boundary`) is needed.", "",
                  "| attributes | score correlation | W boundary cosine |", "|---|---|---|"]
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                lines.append(f"| {names[i]} / {names[j]} | {fmt(float(corr[i, j]), 2)} | {fmt(float(cos[i, j]), 2)} |")
    if rescored is not None:
        lines += ["", "## Re-scoring", "",
                  f"Mean change of each attribute (columns, in its own units) per latent unit along each W "
                  f"boundary (rows; times its distance std for the change per std), central differences over "
                  f"steps of one distance std on {meta.get('rescore latents', '?')} held-out latents. The "
                  "diagonal is the intended edit; the rest is entanglement.", "",
                  rescored.to_markdown()]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--generator", default="world64", help="registry name or exported .pt")
    p.add_argument("--n", type=int, default=100_000, help="latents to sample and label")
    p.add_argument("--spaces", default="w,z", help="comma-separated from z, w, w+")
    p.add_argument("--labeler", default="H", help="H, teacher, random (smoke test) or a regressor .pt")
    p.add_argument("--attributes", default=None, help="comma-separated subset of the labeler's attributes")
    p.add_argument("--psi", type=float, default=1.0, help="truncation of the sampled W codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ratio", type=float, default=0.02, help="fraction (or count) of extremes per side")
    p.add_argument("--split", type=float, default=0.7)
    p.add_argument("--C", type=float, default=1.0, help="SVM regularisation")
    p.add_argument("--mixing", type=float, default=0.9, help="style-mixing probability of W+ latents")
    p.add_argument("--n-plus", type=int, default=None, help="latents for W+ (default --n; 512 MB per 100k)")
    p.add_argument("--rescore-n", type=int, default=256, help="held-out latents for the re-scoring table (0: skip)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--card", type=Path, default=None, help="model card (default: --out with .md)")
    p.add_argument("--work", type=Path, default=None, help="cache labelled chunks here (resumable)")
    p.add_argument("--chunk", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default=None)
    p.add_argument("--ship", action="store_true", help="register --out in facelab/weights/manifest.json")
    p.add_argument("--no-progress", action="store_true")
    return p


def fit_all(G, args, spaces: list[str], attrs: list[str], scores: dict, common: dict, meta: dict) -> list[I.Boundary]:
    """One boundary per attribute and space; W+ ones on separately drawn, style-mixed latents."""
    lat = I.sample_latents(G, args.n, psi=args.psi, seed=args.seed)
    boundaries: list[I.Boundary] = []
    for space in spaces:
        if space == "w+":
            n_plus = args.n_plus or args.n
            sc = label_all(G, n_plus, space="w+", **common)
            codes = I.sample_latents(G, n_plus, space="w+", psi=args.psi, seed=args.seed,
                                     mixing=args.mixing).codes("w+")
            meta["W+ latents"] = f"{n_plus}, style mixing probability {args.mixing}"
        else:
            codes, sc = lat.codes(space), scores
        for a in attrs:
            t0 = time.time()
            b = I.train_boundary(codes, sc[a], ratio=args.ratio, split=args.split, C=args.C, seed=args.seed,
                                 attribute=a, space=space)
            b.meta = {k: meta[k] for k in ("generator", "labeler", "latents")}
            boundaries.append(b)
            r = b.report
            print(f"{space:>2} {a:<12} val {fmt(r.val_accuracy)}  all {fmt(r.all_accuracy)}  "
                  f"r {fmt(r.score_correlation)}  ({time.time() - t0:.1f} s)", flush=True)
    return boundaries


def analyse(G, args, boundaries: list[I.Boundary], attrs: list[str], scores: dict, labeler, device, meta: dict):
    """(score correlation, W boundary cosines or None, re-scoring on held-out latents or None)."""
    corr = I.attribute_correlation({a: scores[a] for a in attrs})
    w_bounds = {b.attribute: b for b in boundaries if b.space == "w"}
    cos = I.boundary_cosines(w_bounds) if len(w_bounds) == len(attrs) else None
    rescored = None
    if args.rescore_n > 0 and w_bounds:
        held_out = I.sample_latents(G, args.rescore_n, psi=args.psi, seed=args.seed, start=args.n)  # never fitted
        rescored = I.rescore(G, held_out.w.to(device), w_bounds, labeler, step="std", batch_size=args.batch_size)
        meta["rescore latents"] = f"{args.rescore_n} (rows {args.n}..{args.n + args.rescore_n - 1} of the stream)"
    return corr, cos, rescored


def analysis_meta(attrs: list[str], corr, cos, rescored) -> dict:
    """The analysis as plain JSON types, stored in the boundaries file's meta."""
    return {"attributes": attrs, "score_correlation": corr.tolist(),
            "w_boundary_cosines": None if cos is None else cos.tolist(),
            "rescore": None if rescored is None else {
                "change": rescored.change.tolist(), "boundaries": rescored.boundaries,
                "attributes": rescored.attributes, "unit": rescored.unit}}


def write(args, card: Path, spaces: list[str], boundaries: list[I.Boundary], card_text: str, meta: dict) -> None:
    """Save the boundaries, update the card next to them and, with ``--ship``, register them."""
    I.save_boundaries(args.out, boundaries, meta=meta)
    if not card.exists():
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(f"# InterFaceGAN boundaries for `{args.generator}`\n\n"
                        "One hyperplane per attribute and latent space (Shen et al., CVPR 2020), fitted by a linear "
                        "SVM to the latents of the highest- and lowest-scoring faces. Load them with "
                        f"`fl.interpret.load_boundaries({args.out.stem.removeprefix('boundaries_')!r})` "
                        "(or the file path) and edit with `fl.interpret.edit`. Their quality is bounded by the "
                        "labeler's: see its own card.\n")
    write_card_section(card, card_text, tag="metrics")
    print(f"wrote {args.out} ({len(boundaries)} boundaries) and {card}", flush=True)
    if args.ship:
        name = args.out.stem
        ship_file(args.out, name, kind="boundaries", card=card.name,
                  description=f"InterFaceGAN boundaries ({', '.join(spaces)}) of {args.generator}, {args.n} latents, "
                              f"labeler {args.labeler}")
        print(f"registered {name!r} in {PACKAGE_WEIGHTS / 'manifest.json'}", flush=True)


def quoted_command(argv: list[str]) -> str:
    """The command line as the card quotes it: paths inside the working directory made relative to it,
    so that a card rebuilt in another checkout (or by ``facelab.train.build``) quotes the same command."""
    cwd = Path.cwd()

    def rel(arg: str) -> str:
        path = Path(arg)
        return os.path.relpath(path, cwd) if path.is_absolute() and path.resolve().is_relative_to(cwd) else arg

    return "python -m facelab.train.boundaries " + shlex.join(rel(a) for a in argv)


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    for s in spaces:
        I.check_space(s)
    card = args.card or args.out.with_suffix(".md")
    if args.ship and args.out.resolve().parent != PACKAGE_WEIGHTS.resolve():
        p.error(f"--ship registers a file inside the package: use --out {PACKAGE_WEIGHTS}/boundaries_<generator>.pt")
    t_start = time.time()
    device = get_device(args.device)
    G = load_generator(args.generator, device=device).eval()
    labeler, labeler_id = make_labeler(args.labeler, device=device, seed=args.seed)
    gen_path = Path(args.generator) if is_path(args.generator) else weights_path(args.generator)
    config = {"generator": sha256_file(gen_path), "weights_sha256": weights_sha256(G), "labeler": labeler_id,
              "seed": args.seed, "psi": args.psi, "mixing": args.mixing, "noise_mode": "const"}
    common = dict(labeler=labeler, config=config, work=args.work, chunk=args.chunk, batch_size=args.batch_size,
                  progress=not args.no_progress)

    scores = label_all(G, args.n, space="w", **common)
    attrs = list(scores) if args.attributes is None else [a.strip() for a in args.attributes.split(",")]
    missing = [a for a in attrs if a not in scores]
    if missing:
        p.error(f"the labeler has no attributes {missing}; it gives {list(scores)}")
    meta = {"generator": f"{args.generator} (sha256 {config['generator'][:12]})", "labeler": labeler_id,
            "latents": f"{args.n} (seed {args.seed}, truncation psi {args.psi}, noise const)",
            "SVM": f"top/bottom ratio {args.ratio}, split {args.split}, C {args.C}, sklearn.svm.SVC(kernel='linear')",
            "command": quoted_command(sys.argv[1:] if argv is None else argv)}
    boundaries = fit_all(G, args, spaces, attrs, scores, common, meta)
    corr, cos, rescored = analyse(G, args, boundaries, attrs, scores, labeler, device, meta)
    meta["time"] = f"{time.time() - t_start:.0f} s on {device.type}"
    meta["analysis"] = analysis_meta(attrs, corr, cos, rescored)
    write(args, card, spaces, boundaries, card_markdown(boundaries, corr, attrs, cos, rescored, meta), meta)


if __name__ == "__main__":
    errors_in_one_line(main)
