"""Do the claims' 95 % intervals cover 95 %? A simulation of each interval of ``facelab.claims``.

    python scripts/probe_claims_coverage.py [--reps 500] [--ns 6,12,32,100] [--seed 0] [--only TEXT]

Every verdict of the course reads an interval from :mod:`facelab.claims`; a verdict is only as honest
as that interval's coverage. This probe draws ``--reps`` data sets of each size from distributions
whose true value is known, shaped like the course's data (skewed positive scores, rates near 0.9, a
ratio of paired means such as PTI's edit strength against W's), computes each interval exactly as a
claim does, and counts how often it contains the truth. Each row gives that coverage with its own
Wilson interval and a reading by a rule fixed before the first run: **under-covers** when the
coverage interval lies wholly below 0.95 (such an interval's verdicts are too often *holds* or *does
not hold*), **over-covers** when wholly above (too often *inconclusive*), else **nominal**.

The last two rows show why a claim counts independent units (the :mod:`facelab.claims` docstring):
``n`` units, each measured twice with a shared part (correlation about 0.7, as a face's +2 and -2
std edits share the face), judged once with both measurements pooled as ``2n`` samples and once
with one mean per unit.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from facelab import claims as C

TRUE_RATIO = math.exp(0.5 ** 2 / 2)  # E[b·L] / E[b] for L lognormal(0, 0.5) independent of b


def _gamma(rng, n, scale=0.5):
    return rng.gamma(2.0, scale, n)  # shape 2: skewed, mean 2 · scale


def _ratio(a, b):
    return a.mean() / b.mean()


# (interval, what it estimates, draw(rng, n) -> the interval's Estimate, the true value)
CASES = [
    ("Student t (mean_ci)", "mean of a skewed score", lambda rng, n: C.mean_ci(_gamma(rng, n)), 1.0),
    ("Welch t (difference_ci)", "difference of two skewed means",
     lambda rng, n: C.difference_ci(_gamma(rng, n), _gamma(rng, n, 0.75)), -0.5),
    ("Wilson (proportion_ci)", "a rate of 0.9", lambda rng, n: C.proportion_ci(int((rng.random(n) < 0.9).sum()), n),
     0.9),
    ("expanded percentile bootstrap (bootstrap_ci)", "mean of a skewed score",
     lambda rng, n: C.bootstrap_ci(np.mean, _gamma(rng, n), seed=int(rng.integers(2 ** 31))), 1.0),
    ("expanded percentile bootstrap (bootstrap_ci)", "ratio of two paired means",
     lambda rng, n: _paired_ratio(rng, n), TRUE_RATIO),
    ("Student t, two measurements per unit pooled (mean_ci)", "mean of a skewed score",
     lambda rng, n: C.mean_ci(_twice(rng, n).ravel()), 1.0),
    ("Student t, one mean per unit (mean_ci)", "mean of a skewed score",
     lambda rng, n: C.mean_ci(_twice(rng, n).mean(1)), 1.0),
]


def _twice(rng, n):
    """[n, 2]: each unit's skewed score (variance 0.5) measured twice with its own noise (variance 0.2)."""
    return _gamma(rng, n)[:, None] + rng.normal(0.0, math.sqrt(0.2), (n, 2))


def _paired_ratio(rng, n):
    b = _gamma(rng, n)
    return C.bootstrap_ci(_ratio, b * rng.lognormal(0.0, 0.5, n), b, seed=int(rng.integers(2 ** 31)))


def coverage(draw, truth: float, n: int, reps: int, seed: int) -> C.Estimate:
    """The share of ``reps`` intervals from ``draw`` that contain ``truth``, with its Wilson interval."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        e = draw(rng, n)
        hits += e.low <= truth <= e.high
    return C.proportion_ci(hits, reps)


def reading(cov: C.Estimate) -> str:
    return "under-covers" if cov.high < C.LEVEL else "over-covers" if cov.low > C.LEVEL else "nominal"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=500, help="simulated data sets per row")
    p.add_argument("--ns", default="6,12,32,100", help="sample sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="only the rows whose interval's name contains this text")
    args = p.parse_args(argv)
    ns = [int(n) for n in args.ns.split(",")]
    print(f"{args.reps} simulated data sets per row; nominal coverage {C.LEVEL:.0%}")
    print("| interval | of | n | coverage [95 %] | reading |")
    print("|---|---|---|---|---|")
    for i, (interval, of, draw, truth) in enumerate(CASES):
        if args.only not in interval:
            continue
        for n in ns:
            cov = coverage(draw, truth, n, args.reps, seed=args.seed + 1000 * i + n)
            print(f"| {interval} | {of} | {n} | {cov.value:.3f} [{cov.low:.3f}, {cov.high:.3f}] | {reading(cov)} |",
                  flush=True)


if __name__ == "__main__":
    main()
