"""Are the world card's ± honest? The bootstrap sds of identity FD, precision and recall against fresh sets.

    python scripts/probe_metric_spread.py [--generator facelab/weights/world64.pt] [--seeds 10,20,...]
        [--n 1000] [--out docs/world64/spread]

``facelab.train.evaluate`` gives each number of the world card a bootstrap sd, computed from the one
set of faces it measured. This probe measures what those sds stand for: it evaluates the generator
again on independent sets (each seed draws fresh world faces and two fresh teacher sets; seeds ten
apart share none, since a seed s uses s, s + 1 and s + 2) and compares the spread *between* the sets
with the bootstrap sds *within* them. Each seed's numbers are written to ``--out/eval<seed>.json``
(``evaluate --json``) and reused when present, so an interrupted probe resumes. The default folder is
committed beside the card's ``metrics.json``: ``python -m facelab.train.targets world64`` judges the
generator's targets over these sets too (``facelab.train.targets.generator_claims_over_sets``).

The rule, fixed before the first run: from k sets, the between-set sd s gives a 95 % interval for the
true sd, s · √((k − 1) / χ²), with χ² the 97.5 % and 2.5 % quantiles of a χ² with k − 1 degrees of
freedom (the values taken as normal). The bootstrap **errs wide** when the mean of the k bootstrap
sds lies above that interval, **under-states** when below it, and is **consistent** with the spread
between sets when inside.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import chi2

METRICS = ("identity_fd", "precision", "recall")
SETS = {"psi1": "world, ψ = 1", "psi07": "world, ψ = 0.7", "teacher": "second teacher set"}
SEEDS = (*range(10, 70, 10), *range(100, 400, 10))  # the sets in docs/world64/spread (2026-12-07)


def _row(label: str, metric: str, values, sds) -> dict:
    """The between-set sd of ``values`` (one per run) against the mean of the runs' own ``sds``."""
    values, sds = np.asarray(values, dtype=float), np.asarray(sds, dtype=float)
    k = len(values)
    if k < 3:
        raise ValueError(f"the spread between sets needs at least 3 independent runs, got {k}: add seeds")
    s = float(values.std(ddof=1))
    lo, hi = s * math.sqrt((k - 1) / chi2.ppf(0.975, k - 1)), s * math.sqrt((k - 1) / chi2.ppf(0.025, k - 1))
    b = float(sds.mean())
    verdict = "errs wide" if b > hi else "under-states" if b < lo else "consistent"
    return {"set": label, "metric": metric, "k": k, "mean": float(values.mean()), "sd_between": s,
            "sd_between_ci": (lo, hi), "sd_bootstrap": b, "verdict": verdict}


def spread_rows(runs: list[dict]) -> list[dict]:
    """One row per set and metric of ``evaluate``'s ``identity_diversity``, over independent runs."""
    return [_row(label, metric, [r["identity_diversity"][key][metric] for r in runs],
                 [r["identity_diversity"][key][f"{metric}_sd"] for r in runs])
            for key, label in SETS.items() for metric in METRICS]


def target_rows(runs: list[dict]) -> list[dict]:
    """The same for the generator targets of the world card (``facelab.train.targets``): each run's
    claim value against the sd its interval implies (half its width / 1.96), which combines the rows'
    sds as if independent. Where the runs have it, a last row does the same for ``evaluate``'s paired
    bootstrap sd of the FD ratio (``identity_fd_ratio_sd``), which the targets do not use."""
    from facelab.train.targets import generator_claims

    by_target = zip(*(generator_claims(r) for r in runs))  # each target's claim in every run
    rows = [_row("target", claims[0].statement.split(" (")[0], [c.measured.value for c in claims],
                 [(c.measured.high - c.measured.low) / (2 * 1.96) for c in claims])
            for claims in by_target]
    psi1 = [r["identity_diversity"]["psi1"] for r in runs]
    if all("identity_fd_ratio_sd" in d for d in psi1):
        rows.append(_row("target", "identity FD ≤ 2× the teacher-vs-teacher floor (paired bootstrap sd)",
                         [d["identity_fd_ratio"] for d in psi1], [d["identity_fd_ratio_sd"] for d in psi1]))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [f"| set | metric | mean of {rows[0]['k']} sets | sd between sets [95 %] | mean bootstrap sd | "
             "bootstrap / between | verdict |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["sd_between_ci"]
        ratio = r["sd_bootstrap"] / r["sd_between"] if r["sd_between"] > 0 else math.inf
        lines.append(f"| {r['set']} | {r['metric']} | {r['mean']:.4g} | {r['sd_between']:.3g} "
                     f"[{lo:.3g}, {hi:.3g}] | {r['sd_bootstrap']:.3g} | {ratio:.2f} | {r['verdict']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="facelab/weights/world64.pt", help="a generator.pt (no card is touched)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds at least 3 apart: independent sets "
                   "(default: the 36 sets the card reads, 10-60 and 100-390)")
    p.add_argument("--n", type=int, default=1000, help="faces per set, as the card's")
    p.add_argument("--out", default="docs/world64/spread",
                   help="folder for each seed's eval<seed>.json (reused; the targets read the default one)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if any(b - a < 3 for a, b in zip(sorted(seeds), sorted(seeds)[1:])):
        raise SystemExit(f"error: seeds {seeds} share teacher faces (a seed s draws s, s+1, s+2): space them 3 apart")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, G = [], None
    for seed in seeds:
        path = out / f"eval{seed}.json"
        if not path.is_file():
            from facelab.hub import load_generator  # only when something is left to measure
            from facelab.train.evaluate import evaluate
            print(f"evaluating seed {seed} on {args.n} faces per set ...", flush=True)
            G = G or load_generator(args.generator, device=args.device).eval()
            path.write_text(json.dumps(evaluate(G, n=args.n, seed=seed, device=args.device), indent=1))
        run = json.loads(path.read_text())
        if run["n"] != args.n:
            raise SystemExit(f"error: {path} measured {run['n']} faces per set, not --n {args.n}: "
                             "delete it or pass its --n")
        runs.append(run)
    print(f"{args.generator}: {len(runs)} independent sets of {args.n} faces (seeds {args.seeds})")
    print(markdown(spread_rows(runs) + target_rows(runs)))


if __name__ == "__main__":
    main()
