"""Claims a reviewer can check: a measured value with its uncertainty, a baseline, and a verdict by a rule.

Every claims table of the course is built here, so every verdict follows the same stated rule:

    A claim asserts that a quantity θ lies beyond a bound b (θ > b, or θ < b). From n samples we
    compute a 95 % confidence interval [lo, hi] for θ. The claim **holds** when the whole interval
    lies beyond the bound, **does not hold** when the whole interval lies on the other side, and is
    **inconclusive** when the interval contains the bound, or when n < 6 (too few to say anything),
    or when the value is not a number or its interval has no width (every sample alike: nothing
    says how uncertain it is).

The bound is the claim's reference (a baseline such as different people's identity similarity, the
majority class, a 1 px shift, chance) plus an optional margin that the claim itself asserts
("at least 0.8× W's change"). Intervals: Student's t for a mean (and for paired differences),
Welch's t for a difference of two independent means, Wilson's score interval for a proportion, and
a seeded expanded percentile bootstrap for any other statistic — the same data give the same
interval on every machine up to float rounding.

How often they cover the truth, in simulations shaped like the course's data (``python
scripts/probe_claims_coverage.py --reps 2000``, 2026-12-07): Student's t covers the mean of a
skewed score 0.91 of the time at n = 6, 0.93 at n = 12 and 0.94-0.95 from n = 32; Welch's interval
0.95-0.96 at every n tried; Wilson's 0.935-0.99 for a rate of 0.9; the bootstrap as often as Student's t
for a mean (0.90, 0.93, 0.94-0.95; the plain percentile interval, before the expansion: 0.82, 0.89,
0.93-0.95) and, for a ratio of paired means, 0.89 at n = 6, 0.91 at n = 12 and 0.92-0.94 from n = 32
(plain: 0.82, 0.87, 0.91-0.93). Below about 30 samples every interval but Welch's is somewhat too
narrow: a verdict from a dozen samples deserves a second look.

Every interval here takes its samples as **independent units**: one value per face, photo or training
run, whatever the claim generalises over. Measurements that share a unit (a face's +2 and -2 std
edits, three attributes edited on one photo, 32 faces rendered by one tuned generator) are averaged
per unit first, or the claim names its population ("in this run"); pooled as if independent they
narrow the interval and can make a claim hold that the units do not support: two measurements per
unit that correlate about 0.7, pooled, gave Student t intervals that covered the mean 0.83-0.86 of
the time at every n from 6 to 100 units, one mean per unit 0.93-0.95 (``python
scripts/probe_claims_coverage.py --reps 4000 --only "per unit"``, 2026-12-07). A baseline drawn from
other units (different people's similarity) uses disjoint pairs, so that no face counts twice.

In a notebook, a ``# NBVAL_CHECK_OUTPUT`` cell prints :func:`verdicts` (verdict and statement
only: nbval compares them on every run, under other numerics too), and an unchecked cell shows
:func:`table` with the numbers (n, the measured value and its interval, the baseline, the rule).
Structural facts ("the generator has 10 style inputs") are :func:`exact` claims: true or false,
no interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
MIN_N = 6          # fewer samples than this: always inconclusive
LEVEL = 0.95       # confidence level of every interval
N_BOOT = 2000      # bootstrap resamples


@dataclass(frozen=True)
class Estimate:
    """A measured value with its 95 % interval [low, high] from n samples; ``how`` names the interval."""
    value: float
    low: float
    high: float
    n: int
    how: str

    def __str__(self) -> str:
        if self.how == "exact":
            return _num(self.value)
        return f"{_num(self.value)} [{_num(self.low)}, {_num(self.high)}]"


@dataclass(frozen=True)
class Claim:
    """One row of a claims table.

    ``measured``: what was measured (its interval is the one the rule tests, unless ``tested`` is
    given, e.g. a difference of two means); ``baseline``: the reference, as a number, an estimate or
    a short text; ``rule``: the bound in words (``"> baseline + 0.05"``); ``verdict``: one of
    ``HOLDS``, ``DOES_NOT_HOLD``, ``INCONCLUSIVE``; ``note``: what a reader must know (e.g. the judge
    is the network the method trained through)."""
    statement: str
    measured: Estimate | str
    baseline: Estimate | float | str | None
    rule: str
    verdict: str
    n: int
    tested: Estimate | None = None
    note: str = ""

    @property
    def holds(self) -> bool:
        return self.verdict == HOLDS


# --- the rule -----------------------------------------------------------------------------------

def decide(interval: Estimate, bound: float, direction: str) -> str:
    """The verdict for "θ > bound" (``direction='>'``) or "θ < bound" (``'<'``) from θ's interval."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    if interval.n < MIN_N or not all(math.isfinite(v) for v in (interval.value, interval.low, interval.high)):
        return INCONCLUSIVE
    if not interval.low < interval.high:  # no width: identical samples carry no measure of their spread
        return INCONCLUSIVE
    lo, hi = (interval.low, interval.high) if direction == ">" else (-interval.high, -interval.low)
    b = bound if direction == ">" else -bound
    if lo > b:
        return HOLDS
    if hi < b:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


# --- intervals ----------------------------------------------------------------------------------

def _as_array(values) -> np.ndarray:
    """float64 numpy of numbers, arrays or torch tensors on any device in any float dtype (a CUDA or a
    bfloat16 tensor has no numpy view of its own), or of a list of them."""
    if hasattr(values, "detach"):  # a tensor, wherever it lives
        values = values.detach().cpu().double()
    elif isinstance(values, (list, tuple)):
        values = [_as_array(v) for v in values]
    return np.asarray(values, dtype=np.float64)


def _one_per_unit(samples, what: str) -> np.ndarray:
    """``samples`` as a 1-d float64 array, one value per unit; a table of several values per unit is refused."""
    x = _as_array(samples)
    if sum(d > 1 for d in x.shape) > 1:
        raise ValueError(f"{what} must hold one value per unit (face, photo), got shape {list(x.shape)}; average each "
                         "unit's values first: pooled, they would count one unit several times")
    return x.reshape(-1)


def _finite(samples, what: str = "samples") -> np.ndarray:
    x = _one_per_unit(samples, what)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError(f"no finite {what}: pass the per-sample values the claim is about")
    return x


def _t(df: float) -> float:
    """Student's t quantile for a two-sided ``LEVEL`` interval."""
    from scipy.stats import t
    return float(t.ppf(0.5 + LEVEL / 2, df))


def _z() -> float:
    """The normal quantile for a two-sided ``LEVEL`` interval (1.96 at 95 %)."""
    from scipy.stats import norm
    return float(norm.ppf(0.5 + LEVEL / 2))


def mean_ci(samples) -> Estimate:
    """The mean of the finite samples and its Student-t 95 % interval (NaNs — e.g. undetected faces —
    are dropped and n counts only what is left)."""
    x = _finite(samples)
    n, m = x.size, float(x.mean())
    if n < 2:
        return Estimate(m, -math.inf, math.inf, n, "mean ± t·s.e.")
    half = _t(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Estimate(m, m - half, m + half, n, "mean ± t·s.e.")


def difference_ci(a, b) -> Estimate:
    """mean(a) − mean(b) for independent samples, with Welch's 95 % interval; n = the smaller n."""
    x, y = _finite(a), _finite(b)
    d = float(x.mean() - y.mean())
    if min(x.size, y.size) < 2:
        return Estimate(d, -math.inf, math.inf, min(x.size, y.size), "Welch t")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1)) if se > 0 else 1e9
    half = _t(df) * se
    return Estimate(d, d - half, d + half, min(x.size, y.size), "Welch t")


def proportion_ci(successes: int, n: int) -> Estimate:
    """successes / n with Wilson's 95 % score interval."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = _z()
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else centre - half  # exact ends where rounding would leave 1e-17 beyond them
    high = 1.0 if successes == n else centre + half
    return Estimate(p, low, high, n, "Wilson")


def _expanded_tail(n: int) -> float:
    """The tail probability of the expanded percentile bootstrap (Hesterberg 2015): the normal tail
    beyond √(n / (n − 1)) times Student's t quantile, instead of (1 − LEVEL) / 2. A plain percentile
    interval is as narrow as a z interval with the biased sd; this widens it as t widens z (0.0024
    per side at n = 6, 0.011 at 12, 0.023 at 100)."""
    from scipy.stats import norm
    return float(norm.cdf(-math.sqrt(n / (n - 1)) * _t(n - 1)))


def bootstrap_ci(statistic: Callable[..., float], *arrays, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """``statistic(*arrays)`` and its expanded percentile-bootstrap 95 % interval (Hesterberg, *What
    Teachers Should Know About the Bootstrap*, The American Statistician 2015). The arrays are
    resampled jointly (same indices: paired data stay paired); the resampling is seeded. Resamples
    whose statistic is not a number are left out; when more than 5 % are, the rest is no fair
    picture of the spread and the interval is unbounded (inconclusive); so it is below ``MIN_N``
    samples, whose few distinct resamples would draw a narrow interval that means nothing (two
    photos give three). The expansion matters at small n: the module docstring has how often each
    version covers the truth.

    Every row is resampled, but the n that counts (the ``MIN_N`` rule, the expansion, the reported
    n) is the number of rows whose every value is finite: a row with a NaN (a face the detector
    lost) is evidence the statistic may drop, and 5 faces padded with 195 lost ones are 5 faces."""
    data = [_as_array(a) for a in arrays]
    rows = len(data[0])
    if any(len(a) != rows for a in data):
        raise ValueError(f"bootstrap_ci resamples the arrays jointly: they need one length, got {[len(a) for a in data]}")
    n = int(np.logical_and.reduce([np.isfinite(a.reshape(rows, math.prod(a.shape[1:]))).all(1) for a in data]).sum())
    value = float(statistic(*data))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, rows, size=(n_boot, rows))
    stats = np.array([statistic(*(a[idx] for a in data)) for idx in draws], dtype=float)
    stats = stats[np.isfinite(stats)]
    if n < MIN_N or stats.size < LEVEL * n_boot:
        return Estimate(value, -math.inf, math.inf, n, "bootstrap")
    tail = _expanded_tail(n)
    lo, hi = np.quantile(stats, [tail, 1 - tail])
    return Estimate(value, float(lo), float(hi), n, "bootstrap")


# --- constructors: one per kind of claim --------------------------------------------------------

def _rule(direction: str, reference: str, margin: float) -> str:
    shift = "" if margin == 0 else f" {'+' if margin > 0 else '−'} {_num(abs(margin))}"
    return f"{direction} {reference}{shift}"


def _claim(statement, measured, baseline, rule, interval, bound, direction, note, tested=None) -> Claim:
    return Claim(statement, measured, baseline, rule, decide(interval, bound, direction), interval.n, tested, note)


def greater(statement: str, samples, than, *, margin: float = 0.0, note: str = "") -> Claim:
    """The mean of ``samples`` exceeds ``than`` (+ ``margin``). ``than`` is a number (a fixed
    reference) or other samples (an independent baseline: the difference of means is tested)."""
    return _compare(statement, samples, than, margin, ">", note)


def less(statement: str, samples, than, *, margin: float = 0.0, note: str = "") -> Claim:
    """The mean of ``samples`` is below ``than`` (− ``margin``); see :func:`greater`."""
    return _compare(statement, samples, than, -margin, "<", note)


def _compare(statement, samples, than, margin, direction, note) -> Claim:
    measured = mean_ci(samples)
    if np.ndim(than) == 0:
        return _claim(statement, measured, float(than), _rule(direction, _num(float(than)), margin), measured,
                      float(than) + margin, direction, note)
    baseline = mean_ci(than)
    diff = difference_ci(samples, than)
    return _claim(statement, measured, baseline, _rule(direction, "baseline", margin), diff, margin, direction,
                  note, tested=diff)


def paired_greater(statement: str, a, b, *, margin: float = 0.0, note: str = "") -> Claim:
    """``a`` exceeds ``b`` on the same items (faces, photos): the mean of a − b is tested against
    ``margin``; the table shows a as measured and b as the baseline."""
    return _paired(statement, a, b, margin, ">", note)


def paired_less(statement: str, a, b, *, margin: float = 0.0, note: str = "") -> Claim:
    """``a`` is below ``b`` on the same items; see :func:`paired_greater`."""
    return _paired(statement, a, b, -margin, "<", note)


def paired_means(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Per unit [N], the means of two methods' tables ``a``, ``b`` [K, N] (K measurements, e.g. attributes,
    of the same N units), each over the measurements finite in *both*: where one method lost a face on one
    attribute, that attribute leaves both means, so that each pair compares the same measurements (a
    ``nanmean`` of each table alone would pair means over different attributes). A unit with none in
    common is NaN, which the paired claims leave out."""
    x, y = (_as_array(t) for t in (a, b))
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"paired_means takes two tables [measurements, units] of one shape, got {list(x.shape)} and "
                         f"{list(y.shape)}")
    both = np.isfinite(x) & np.isfinite(y)
    count = both.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tuple(np.where(both, t, 0.0).sum(0) / np.where(count > 0, count, np.nan) for t in (x, y))


def _paired(statement, a, b, margin, direction, note) -> Claim:
    x, y = _one_per_unit(a, "a paired claim's a"), _one_per_unit(b, "a paired claim's b")
    if x.shape != y.shape:
        raise ValueError(f"paired claims need one value of each per item, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    diff = mean_ci(x[keep] - y[keep])
    return _claim(statement, mean_ci(x[keep]), mean_ci(y[keep]), _rule(direction, "baseline (paired)", margin),
                  diff, margin, direction, note, tested=diff)


def proportion_greater(statement: str, successes: int, n: int, *, than: float, baseline: str = "",
                       note: str = "") -> Claim:
    """A rate (accuracy, detection rate) exceeds ``than``, a known rate (a paper's bar, chance).

    ``than`` is taken as exact. A baseline estimated from the same items, such as the majority-class
    rate of the labels an accuracy is measured on, has its own error: compare per item instead,
    ``paired_greater(statement, correct, majority_correct)``."""
    est = proportion_ci(int(successes), int(n))
    return _claim(statement, est, baseline or float(than), _rule(">", _num(than), 0.0), est, than, ">", note)


def bootstrap(statement: str, statistic: Callable[..., float], *arrays, than: float, direction: str = ">",
              baseline: Estimate | float | str | None = None, n_boot: int = N_BOOT, seed: int = 0,
              note: str = "") -> Claim:
    """Any statistic of paired arrays (a ratio of means, a correlation) against a bound ``than``,
    with a seeded bootstrap interval: ``bootstrap("PTI edits as strong as W's", lambda p, w:
    p.mean() / w.mean(), pti_change, w_change, than=0.8)``."""
    est = bootstrap_ci(statistic, *arrays, n_boot=n_boot, seed=seed)
    return _claim(statement, est, baseline if baseline is not None else float(than), _rule(direction, _num(than), 0.0),
                  est, than, direction, note)


def exact(statement: str, holds: bool, measured: str = "", *, note: str = "") -> Claim:
    """A structural fact, true or false (no sampling, no interval)."""
    return Claim(statement, measured, None, "exact", HOLDS if holds else DOES_NOT_HOLD, 1, None, note)


# --- printing -----------------------------------------------------------------------------------

Row = Claim | tuple   # a tuple (statement, measured, holds: bool) is the older form, still accepted


def _verdict_of(row: Row) -> str:
    if isinstance(row, Claim):
        return row.verdict
    return "yes" if row[2] else "NO"


def verdicts(claims: Sequence[Row]) -> str:
    """One ``verdict | statement`` line per claim, no numbers: what a checked cell prints."""
    width = max([len(_verdict_of(c)) for c in claims] + [3])
    return "\n".join(f"{_verdict_of(c):{width}s} | {c.statement if isinstance(c, Claim) else c[0]}"
                     for c in claims)


def table(claims: Sequence[Row]):
    """The claims with their numbers as a Markdown table (an IPython ``Markdown`` object when IPython
    is available, else the text): claim | n | measured [95 % CI] | baseline | rule | verdict. Show
    it in an *unchecked* cell: the last digits depend on the CPU."""
    lines = ["| claim | n | measured [95 % CI] | baseline | rule | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        if isinstance(c, Claim):
            claim = c.statement + (f" ({c.note})" if c.note else "")
            measured = str(c.measured) + (f"; tested: {c.tested}" if c.tested is not None else "")
            cells = (claim, c.n, measured, "—" if c.baseline is None else c.baseline, c.rule, f"**{c.verdict}**")
        else:
            cells = (c[0], "—", c[1], "—", "—", _verdict_of(c))
        lines.append("| " + " | ".join(_escape(x) for x in cells) + " |")
    text = "\n".join(lines)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - IPython ships with the notebooks extra
        return text
    return Markdown(text)


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _escape(cell) -> str:
    return str(cell).replace("|", "\\|")


__all__ = ["Claim", "DOES_NOT_HOLD", "Estimate", "HOLDS", "INCONCLUSIVE", "MIN_N", "bootstrap", "bootstrap_ci",
           "decide", "difference_ci", "exact", "greater", "less", "mean_ci", "paired_greater", "paired_less",
           "paired_means", "proportion_ci", "proportion_greater", "table", "verdicts"]
