"""Compare training recipes for a world at equal CPU time, from the same starting generator.

    python -m facelab.train.recipes run --cpu-minutes 30          # each recipe, resumable
    python -m facelab.train.recipes evaluate                      # every snapshot, and the start
    python -m facelab.train.recipes report --card facelab/weights/world64.md --figure docs/world64/recipes.png

Every recipe warm-starts from the same checkpoint (``--start``, by default the committed
``checkpoints/world64/checkpoint.pt``): the same generator, EMA, optimiser and counters; only the
discriminator differs (see ``facelab.train.gan``). Budgets are processor time of the training
process (``time.process_time``), so a recipe is not favoured by a quieter machine. Each snapshot's
EMA generator is kept and later judged in the dlib identity space, which no recipe trains through:
identity Fréchet distance and improved precision/recall (k = 3) against a fixed teacher set, with
bootstrap standard deviations and the values of a second teacher set as the reference.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..hub import load_file, load_generator
from ..imaging import resize
from ..nets.stylegan2 import Generator, StyleGAN2Config
from ..nets.teacher import sample_teacher
from ..utils import write_card_section
from .evaluate import generate, identity_diversity, identity_features
from .gan import CHECKPOINT, TrainConfig, train
from .loop import errors_in_one_line

# name -> (TrainConfig overrides, one line for the table)
RECIPES = {
    "a-stylegan2": ({"disc": "stylegan2"}, "StyleGAN2 recipe continued (residual D, lazy R1)"),
    "b-projected": ({"disc": "projected"}, "projected D on frozen MTCNN-ONet features only (Sauer et al. 2021)"),
    "c-both": ({"disc": "both"}, "StyleGAN2 D + projected D, losses summed (Kumari et al. 2022)"),
}
DEFAULT_START = Path("checkpoints/world64/checkpoint.pt")
DEFAULT_ROOT = Path("runs/recipes")


def run(names, *, cpu_minutes: float, start: Path = DEFAULT_START, root: Path = DEFAULT_ROOT,
        snap_kimg: float = 4.0, progress: bool = True) -> None:
    """Train each recipe until it has used ``cpu_minutes`` of processor time since the start."""
    start_ckpt = load_file(start)
    start_cpu, start_cfg = start_ckpt["state"].get("cpu_seconds", 0.0), _recipe_base(start_ckpt["train_config"])
    del start_ckpt
    for name in names:
        overrides, _ = RECIPES[name]
        out = root / name
        done = 0.0
        if (out / CHECKPOINT).exists():
            done = (load_file(out / CHECKPOINT)["state"]["cpu_seconds"] - start_cpu) / 60
        if done >= cpu_minutes:
            print(f"{name}: {done:.1f} CPU minutes already, skipping")
            continue
        cfg = start_cfg.replace(**overrides, cpu_minutes=cpu_minutes - done, snap_kimg=snap_kimg,
                                keep_snapshots=True, kimg=1e6)
        print(f"{name}: training {cpu_minutes - done:.1f} CPU minutes ({RECIPES[name][1]})")
        train(out, cfg, init_from=start, progress=progress)


def _recipe_base(saved: dict) -> TrainConfig:
    """The starting run's hyperparameters, less its budgets: every recipe inherits them."""
    return TrainConfig.from_dict(saved).replace(minutes=None, cpu_minutes=None)


def start_generator(start: Path = DEFAULT_START) -> Generator:
    """The EMA generator stored in a training checkpoint, with its counters as ``meta``."""
    ckpt = load_file(start)
    G = Generator(StyleGAN2Config.from_dict(ckpt["net_config"]))
    G.load_state_dict(ckpt["G_ema"])
    st = ckpt["state"]
    G.meta = {"kimg": round(st["nimg"] / 1000, 3), "train_cpu_seconds": st.get("cpu_seconds", 0.0)}
    return G.eval()


def evaluate(*, root: Path = DEFAULT_ROOT, start: Path = DEFAULT_START, n: int = 500, seed: int = 0,
             boot: int = 50) -> dict:
    """Judge the start and every kept snapshot; results are cached in ``root/results.json``."""
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    teacher_cache = root / f"teacher-{n}-{seed}.pt"
    if teacher_cache.exists():
        teacher, teacher2 = load_file(teacher_cache)["feats"]
    else:
        teacher, teacher2 = (identity_features(sample_teacher(n, seed=seed + i)) for i in (1, 2))
        root.mkdir(parents=True, exist_ok=True)
        torch.save({"feats": [teacher, teacher2]}, teacher_cache)
    start_cpu = load_file(start)["state"].get("cpu_seconds", 0.0)
    todo = [("start", "start", start)] + [(name, p.stem, p) for name in RECIPES
                                          for p in sorted((root / name / "snapshots").glob("generator-*.pt"))]
    for recipe, label, path in todo:
        key = f"{recipe}/{label}"
        if key in results:
            continue
        G = start_generator(path) if recipe == "start" else load_generator(path, device="cpu")
        faces = resize(generate(G, n, seed=seed, psi=1.0), 64)
        stats = identity_diversity({"world": identity_features(faces)}, teacher, teacher2, boot=boot)
        results[key] = {"recipe": recipe, "kimg": G.meta["kimg"],
                        "cpu_minutes": round((G.meta.get("train_cpu_seconds", 0.0) - start_cpu) / 60, 2),
                        **stats}
        print(key, json.dumps({k: results[key][k] for k in ("kimg", "cpu_minutes")}), stats["world"])
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    return results


def report(results: dict, *, card: Path | None = None, figure: Path | None = None, n: int | None = None) -> str:
    """A markdown table (last snapshot of each recipe) and a learning-curve figure."""
    start = results["start/start"]
    floor = start["teacher"]["identity_fd"]
    ref = start["teacher"]
    rows = ["| recipe | CPU min | kimg | identity FD (× floor) | precision | recall |", "|---|---|---|---|---|---|"]

    def row(label: str, r: dict) -> str:
        w = r["world"]
        return (f"| {label} | {r['cpu_minutes']:.0f} | {r['kimg']:.1f} | {w['identity_fd']:.4f} ± {w['identity_fd_sd']:.4f}"
                f" ({w['identity_fd'] / floor:.1f}×) | {w['precision']:.2f} ± {w['precision_sd']:.2f} | "
                f"{w['recall']:.2f} ± {w['recall_sd']:.2f} |")

    rows.append(row("start (committed checkpoint)", start))
    curves = {}
    for name, (_, what) in RECIPES.items():
        pts = sorted((r for r in results.values() if r["recipe"] == name), key=lambda r: r["cpu_minutes"])
        if pts:
            curves[name] = [start] + pts
            rows.append(row(f"{name}: {what}", pts[-1]))
    rows.append(f"| reference: a second teacher set | – | – | {floor:.4f} ± {ref['identity_fd_sd']:.4f} (1.0×) | "
                f"{ref['precision']:.2f} ± {ref['precision_sd']:.2f} | {ref['recall']:.2f} ± {ref['recall_sd']:.2f} |")
    n = n or start["world"]["n_fake"]
    md = "\n".join([
        f"Measured by `python -m facelab.train.recipes evaluate` (n = {n} faces per set, ψ = 1, dlib identity "
        "embeddings, k = 3, ± bootstrap sd over 50 resamples); every recipe starts from the committed "
        "checkpoint and trains for the same processor time, one thread.", "", *rows])
    if figure is not None and curves:
        _plot(curves, floor, ref["recall"], figure)
        md += f"\n\n![identity FD and recall vs CPU minutes]({_relative(figure, card)})"
    if card is not None:
        write_card_section(card, md, tag="recipes")
    return md


def _plot(curves: dict, floor: float, ref_recall: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, pts in curves.items():
        x = [p["cpu_minutes"] for p in pts]
        axes[0].errorbar(x, [p["world"]["identity_fd"] / floor for p in pts],
                         yerr=[p["world"]["identity_fd_sd"] / floor for p in pts], marker="o", label=name, capsize=2)
        axes[1].errorbar(x, [p["world"]["recall"] for p in pts], yerr=[p["world"]["recall_sd"] for p in pts],
                         marker="o", label=name, capsize=2)
    axes[0].axhline(1, color="grey", ls="--", lw=1, label="teacher floor")
    axes[0].axhline(2, color="grey", ls=":", lw=1, label="target (2× floor)")
    axes[0].set(xlabel="CPU minutes since the start", ylabel="identity FD / floor", yscale="log")
    axes[1].axhline(ref_recall, color="grey", ls="--", lw=1, label="teacher self-recall")
    axes[1].set(xlabel="CPU minutes since the start", ylabel="recall (k = 3)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _relative(figure: Path, card: Path | None) -> str:
    if card is None:
        return str(figure)
    import os
    return os.path.relpath(figure.resolve(), card.resolve().parent)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m facelab.train.recipes", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("run", "evaluate", "report"))
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names (default: all)")
    p.add_argument("--cpu-minutes", type=float, default=30.0, help="processor minutes per recipe")
    p.add_argument("--start", type=Path, default=DEFAULT_START)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--card", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None)
    a = p.parse_args(argv)
    if a.command == "run":
        run(a.recipes.split(","), cpu_minutes=a.cpu_minutes, start=a.start, root=a.root)
    elif a.command == "evaluate":
        evaluate(root=a.root, start=a.start, n=a.n)
    else:
        results = json.loads((a.root / "results.json").read_text())
        print(report(results, card=a.card, figure=a.figure))


if __name__ == "__main__":
    errors_in_one_line(main)
