"""What does the generator's running average buy? A checkpoint's raw G against its EMA, measured as the card is.

    python scripts/probe_ema.py [--checkpoint checkpoints/world64/checkpoint.pt] [--n 1000]
        [--out runs/probe-ema] [--device cpu]

Training optimises G; what ships is G_ema, its exponential moving average (half-life
``TrainConfig.ema_kimg``). This probe writes three generators of one checkpoint and measures each with
``facelab.train.evaluate`` (seed 0, ``--n`` faces per set, the world card's own evaluation):

- ``raw``: G itself (a compact checkpoint stores it rounded to float16);
- ``ema``: G_ema (stored in float32);
- ``ema16``: G_ema rounded to float16 and back, the raw G's rounding applied to the average, which tells
  the rounding's share of any gap from the averaging's.

It prints identity FD, precision and recall at psi = 1, recall at psi = 0.7 and MTCNN detection, each
with evaluate's bootstrap sd, and each generator's difference from the EMA with a 95 % interval
(+-1.96 sqrt(sd_1^2 + sd_2^2), the two sets taken as independent: their teacher sets are shared, so the
interval errs wide). Each evaluation is written to ``--out/NAME.json`` and reused when present.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = (("identity FD", "psi1", "identity_fd"), ("precision", "psi1", "precision"), ("recall", "psi1", "recall"),
        ("recall, psi = 0.7", "psi07", "recall"))


def generators(checkpoint: Path, out: Path) -> dict[str, Path]:
    """Write the raw, EMA and float16-rounded EMA generators of ``checkpoint`` into ``out`` (once)."""
    from facelab.hub import load_generator
    from facelab.train.gan import export_ema, export_generator

    files = {name: out / f"{name}.pt" for name in ("raw", "ema", "ema16")}
    if not files["raw"].is_file():
        export_ema(checkpoint, files["raw"], raw=True)
    if not files["ema"].is_file():
        export_ema(checkpoint, files["ema"])
    if not files["ema16"].is_file():
        G = load_generator(files["ema"], device="cpu")
        with torch.no_grad():
            for p in G.parameters():
                p.copy_(p.half().float())
        export_generator(G, files["ema16"], meta={**G.meta, "exported_from": f"{files['ema']}, rounded to float16"})
    return files


def values(m: dict) -> dict[str, tuple[float, float]]:
    """{row: (value, bootstrap sd)} of one evaluation."""
    rows = {label: (m["identity_diversity"][s][k], m["identity_diversity"][s][f"{k}_sd"]) for label, s, k in ROWS}
    rate, n = m["mtcnn_rate_world"], m["n"]
    rows["MTCNN detection"] = (rate, math.sqrt(rate * (1 - rate) / n))
    return rows


def table(runs: dict[str, dict]) -> str:
    cols = list(runs)
    vals = {c: values(runs[c]) for c in cols}
    lines = ["| measure | " + " | ".join(cols) + " | " + " | ".join(f"{c} − ema [95 %]" for c in cols if c != "ema")
             + " |", "|---" * (2 * len(cols)) + "|"]
    for row in vals["ema"]:
        cells = [f"{vals[c][row][0]:.4g} ± {vals[c][row][1]:.2g}" for c in cols]
        for c in cols:
            if c == "ema":
                continue
            (a, sa), (b, sb) = vals[c][row], vals["ema"][row]
            half = 1.96 * math.hypot(sa, sb)
            cells.append(f"{a - b:+.3g} [{a - b - half:+.3g}, {a - b + half:+.3g}]")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/world64/checkpoint.pt"))
    p.add_argument("--n", type=int, default=1000, help="faces per set (the card's 1000)")
    p.add_argument("--out", type=Path, default=Path("runs/probe-ema"))
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    from facelab.hub import load_generator
    from facelab.train.evaluate import evaluate

    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, path in generators(args.checkpoint, args.out).items():
        result = args.out / f"{name}.json"
        if not result.is_file():
            print(f"evaluating {name} on {args.n} faces per set ...", flush=True)
            G = load_generator(path, device=args.device).eval()
            result.write_text(json.dumps(evaluate(G, n=args.n, seed=0, device=args.device), indent=1))
        runs[name] = json.loads(result.read_text())
        if runs[name]["n"] != args.n:
            raise SystemExit(f"error: {result} measured {runs[name]['n']} faces per set, not --n {args.n}: "
                             "delete it or pass its --n")
    print(f"{args.checkpoint}: its raw G and its EMA, {args.n} faces per set (evaluate, seed 0)")
    print(table(runs))


if __name__ == "__main__":
    main()
