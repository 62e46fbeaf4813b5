"""Claims: intervals, the verdict rule, the constructors, and what checked and unchecked cells print."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelab import claims
from facelab.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE


def _normal(mean, n, seed=0, sd=1.0):
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_the_rule_reaches_every_verdict_in_both_directions():
    e = lambda lo, hi, n=10: claims.Estimate((lo + hi) / 2, lo, hi, n, "test")  # noqa: E731
    assert claims.decide(e(0.2, 0.4), 0.1, ">") == HOLDS
    assert claims.decide(e(-0.4, -0.2), 0.1, ">") == DOES_NOT_HOLD
    assert claims.decide(e(0.0, 0.2), 0.1, ">") == INCONCLUSIVE
    assert claims.decide(e(-0.4, -0.2), 0.1, "<") == HOLDS
    assert claims.decide(e(0.2, 0.4), 0.1, "<") == DOES_NOT_HOLD
    assert claims.decide(e(0.2, 0.4, n=5), 0.1, ">") == INCONCLUSIVE  # too few samples, however clear
    with pytest.raises(ValueError, match="direction"):
        claims.decide(e(0, 1), 0, ">=")


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    hits = sum(claims.mean_ci(_normal(1.0, 20, seed=s)).low < 1.0 < claims.mean_ci(_normal(1.0, 20, seed=s)).high
               for s in range(400))
    assert 0.92 <= hits / 400 <= 0.98


def test_nans_are_dropped_and_n_counts_what_is_left():
    est = claims.mean_ci([1.0, float("nan"), 2.0, 3.0])
    assert est.n == 3 and est.value == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no finite"):
        claims.mean_ci([float("nan")])


def test_greater_against_a_number_and_against_baseline_samples():
    assert claims.greater("big", _normal(1.0, 40), than=0.0).verdict == HOLDS
    assert claims.greater("big", _normal(-1.0, 40), than=0.0).verdict == DOES_NOT_HOLD
    assert claims.greater("big", _normal(0.0, 40), than=0.0).verdict == INCONCLUSIVE
    # a margin the claim asserts moves the bound: 1.0 > 0 holds, 1.0 > 0 + 3 does not
    assert claims.greater("by 3", _normal(1.0, 40), than=0.0, margin=3.0).verdict == DOES_NOT_HOLD
    c = claims.greater("above other people", _normal(0.9, 32, 1, 0.02), than=_normal(0.88, 32, 2, 0.02))
    assert c.tested is not None and c.verdict == HOLDS and c.n == 32
    assert claims.less("below", _normal(0.5, 32, 3, 0.1), than=_normal(0.9, 32, 4, 0.1)).verdict == HOLDS


def test_paired_claims_use_the_differences():
    base = _normal(0.0, 32, seed=5, sd=5.0)               # large spread between items ...
    a, b = base + 0.3 + _normal(0, 32, 6, 0.05), base     # ... a tiny but consistent paired gap
    assert claims.paired_greater("a above b", a, b).verdict == HOLDS
    assert claims.greater("a above b, unpaired", a, b).verdict == INCONCLUSIVE  # the spread hides it
    assert claims.paired_less("a below b", a, b).verdict == DOES_NOT_HOLD
    with pytest.raises(ValueError, match="one value of each"):
        claims.paired_greater("x", [1, 2], [1, 2, 3])


def test_proportion_against_a_majority_baseline():
    assert claims.proportion_greater("acc", 960, 1000, than=0.9).verdict == HOLDS
    assert claims.proportion_greater("acc", 620, 1000, than=0.97).verdict == DOES_NOT_HOLD
    est = claims.proportion_ci(0, 10)
    assert est.low == pytest.approx(0.0, abs=1e-12) and 0 < est.high < 0.35  # Wilson: sane at the edge


def test_no_claim_holds_without_a_number_or_without_a_spread():
    # A NaN value (a statistic of data with a NaN in it) never holds, whatever its interval says.
    x = np.append(_normal(1.0, 49, 3, 0.1), np.nan)
    assert claims.bootstrap("mean", lambda a: a.mean(), x, than=0.5).verdict == INCONCLUSIVE
    assert claims.decide(claims.Estimate(math.nan, 0.7, 1.2, 50, "x"), 0.5, ">") == INCONCLUSIVE
    # Identical samples have a zero-width t interval: nothing measures their spread.
    assert claims.greater("constant", [1.0] * 10, than=0.9).verdict == INCONCLUSIVE
    assert claims.paired_greater("constant", [1.0] * 10, [0.0] * 10).verdict == INCONCLUSIVE
    # Wilson's ends are exact at 0 and n successes (rounding left 3e-17 above 0 for some n).
    for n in range(6, 200):
        assert claims.proportion_ci(0, n).low == 0.0 and claims.proportion_ci(n, n).high == 1.0
        assert claims.proportion_greater("never", 0, n, than=0.0).verdict != HOLDS


def test_a_bootstrap_that_mostly_fails_to_compute_is_inconclusive():
    # The statistic is NaN in every resample that misses the one informative item: the interval
    # from the few left would be no fair picture of the spread.
    y = np.zeros(30)
    y[0] = 1.0
    ratio = lambda a: a.mean() / a[a > 0].mean() if (a > 0).any() else math.nan  # noqa: E731
    est = claims.bootstrap_ci(ratio, y)
    assert math.isfinite(est.value) and not math.isfinite(est.low)
    assert claims.bootstrap("ratio", ratio, y, than=0.0).verdict == INCONCLUSIVE


def test_a_bootstrap_counts_the_rows_it_can_use_not_the_rows_it_is_given():
    # 5 faces with a change, 195 the detector lost (NaN): 5 faces, below MIN_N, whatever the padding
    rng = np.random.default_rng(0)
    unedited, change = rng.normal(size=200), np.full(200, np.nan)
    change[:5] = 1.0 + 0.1 * rng.normal(size=5)
    strength = lambda u, c: np.nanmean(c) / u.std() if np.isfinite(c).any() else math.nan  # noqa: E731
    padded = claims.bootstrap("moves it", strength, unedited, change, than=0.5)
    assert padded.n == 5 and padded.verdict == INCONCLUSIVE  # was n = 200, holds
    change[:40] = 1.0 + 0.1 * rng.normal(size=40)
    enough = claims.bootstrap_ci(strength, unedited, change)
    assert enough.n == 40 and math.isfinite(enough.low)
    table = np.ones((40, 3))
    table[0, 2] = np.nan  # a row counts when all of its values are finite
    assert claims.bootstrap_ci(lambda t: np.nanmean(t), table).n == 39


def test_paired_means_average_each_pair_over_the_measurements_both_methods_have():
    nan = np.nan
    a = np.array([[1.0, 2.0, nan], [3.0, nan, nan], [5.0, 6.0, 7.0]])  # 3 attributes x 3 faces
    b = np.array([[0.0, nan, nan], [0.0, 1.0, nan], [0.0, 1.0, nan]])
    x, y = claims.paired_means(a, b)
    np.testing.assert_allclose(x, [3.0, 6.0, nan])  # face 1: attribute 2 only, the one both have; face 2: none
    np.testing.assert_allclose(y, [0.0, 1.0, nan])
    assert np.nanmean(a, 0)[1] == 4.0  # a nanmean of a alone would pair attributes 0 and 2 with b's 1 and 2
    assert claims.paired_greater("a above b", x, y).n == 2  # the face with nothing in common is left out
    with pytest.raises(ValueError, match=r"two tables \[measurements, units\] of one shape, got \[3, 3\] and \[3\]"):
        claims.paired_means(a, b[0])


def test_claims_take_tensors_of_any_dtype_with_or_without_grad():
    # metrics hand over tensors on the device they ran on, under autocast in bfloat16: neither has a numpy view
    values = torch.linspace(0.0, 1.0, 20)
    plain = claims.greater("x", values.numpy(), 0.2)
    for given in (values.to(torch.bfloat16), values.clone().requires_grad_(), list(values)):
        got = claims.greater("x", given, 0.2)
        assert got.verdict == plain.verdict and got.n == 20
        assert got.measured.value == pytest.approx(plain.measured.value, abs=0.01)  # bfloat16 rounds
    assert claims.bootstrap_ci(lambda a: a.mean(), values.to(torch.bfloat16)).n == 20
    assert claims.paired_means(values[None].requires_grad_(), values[None])[0].shape == (20,)


def test_several_values_per_unit_are_refused_rather_than_pooled():
    per_face = np.ones((10, 6))  # six attributes of ten faces
    for call in (lambda: claims.greater("x", per_face, 0.5), lambda: claims.paired_less("x", per_face, per_face)):
        with pytest.raises(ValueError, match=r"one value per unit .* got shape \[10, 6\]; average each unit"):
            call()
    assert claims.greater("x", np.ones((10, 1)) + np.arange(10)[:, None], 0.5).n == 10  # a column is one per unit


def test_bootstrap_is_seeded_and_keeps_pairs_together():
    p, w = _normal(1.0, 32, 7, 0.1), _normal(1.0, 32, 8, 0.1)
    ratio = lambda x, y: x.mean() / y.mean()  # noqa: E731
    a = claims.bootstrap("PTI as strong as W", ratio, p, w, than=0.8)
    assert a == claims.bootstrap("PTI as strong as W", ratio, p, w, than=0.8)
    assert a.verdict == HOLDS and a.measured.low < 1.0 < a.measured.high
    with pytest.raises(ValueError, match="one length"):
        claims.bootstrap_ci(ratio, p, w[:3])


def test_a_small_sample_bootstrap_covers_a_skewed_mean_as_often_as_student_t():
    # A plain percentile interval is as narrow as a z interval with the biased sd: at n = 12 it
    # covered the mean of a skewed score 89 % of the time (scripts/probe_claims_coverage.py). The
    # expanded one widens it as t widens z, and covers about as often as Student's t on the same sets.
    rng = np.random.default_rng(3)
    sets = [rng.gamma(2.0, 0.5, 12) for _ in range(300)]  # true mean 1
    covers = lambda e: e.low <= 1.0 <= e.high  # noqa: E731
    boot = np.mean([covers(claims.bootstrap_ci(np.mean, x, n_boot=500, seed=i)) for i, x in enumerate(sets)])
    student = np.mean([covers(claims.mean_ci(x)) for x in sets])
    assert boot >= 0.92 and abs(boot - student) <= 0.03, (boot, student)
    assert claims.bootstrap_ci(np.mean, sets[0][:1]).low == -math.inf  # one sample: no spread at all
    # below MIN_N the few distinct resamples (two samples: three) would draw a narrow interval that means nothing
    assert all(claims.bootstrap_ci(np.mean, sets[0][:k]).high == math.inf for k in range(2, claims.MIN_N))
    assert math.isfinite(claims.bootstrap_ci(np.mean, sets[0][:claims.MIN_N]).high)


def test_exact_claims_are_true_or_false():
    assert claims.exact("ten style inputs", True).verdict == HOLDS
    assert claims.exact("ten style inputs", False).verdict == DOES_NOT_HOLD


def test_verdicts_print_only_verdicts_and_statements():
    rows = [claims.greater("up", _normal(1.0, 40), than=0.0), claims.greater("flat", _normal(0.0, 40), than=0.0)]
    text = claims.verdicts(rows)
    assert text == "holds        | up\ninconclusive | flat"
    assert not any(ch.isdigit() for ch in text)
    old = [("W+ is closer", "W 1.61 vs W+ 1.23", True), ("W is less entangled", "1.88 vs 1.80", False)]
    assert claims.verdicts(old) == "yes | W+ is closer\nNO  | W is less entangled"


def test_the_table_carries_n_interval_baseline_rule_and_escapes_pipes():
    c = claims.greater("a|b", _normal(1.0, 40), than=0.5, note="judged by H")
    text = getattr(claims.table([c]), "data", claims.table([c]))
    header, _, row = text.splitlines()
    assert header.split("|")[1:-1] == [" claim ", " n ", " measured [95 % CI] ", " baseline ", " rule ", " verdict "]
    assert row.startswith("| a\\|b (judged by H) | 40 | ") and "[" in row and "> 0.5" in row and "**holds**" in row
    assert not math.isnan(c.measured.low)


def test_the_repro_report_reads_back_each_decided_interval_and_bound():
    # tests/notebook_spread.py measures how near each checked verdict is to flipping from the
    # claims tables the notebooks print: it must read back the interval each verdict was decided on
    # (a baseline claim's tested difference) and the bound with the claim's margin.
    from notebook_spread import decided_rows

    rows = [claims.greater("above 0.5 by 0.1", _normal(1.0, 30), than=0.5, margin=0.1),
            claims.paired_less("lower than the baseline", _normal(0.0, 30, 1), _normal(1.0, 30, 2), margin=0.2),
            claims.proportion_greater("a rate above chance", 80, 100, than=0.5, note="100 faces"),
            claims.bootstrap("a ratio above 0.8", lambda x: x.mean(), _normal(1.0, 20, 3), than=0.8),
            claims.exact("structure", True)]
    read = decided_rows([claims.table(rows).data])
    assert set(read) == {"above 0.5 by 0.1", "lower than the baseline", "a rate above chance (100 faces)",
                         "a ratio above 0.8"}
    for c in rows[:4]:
        low, high, bound = read[c.statement + (f" ({c.note})" if c.note else "")]
        decided = c.tested or c.measured
        assert (low, high) == pytest.approx((decided.low, decided.high), rel=1e-2)
    assert read["above 0.5 by 0.1"][2] == pytest.approx(0.6) and read["lower than the baseline"][2] == -0.2
    assert read["a rate above chance (100 faces)"][2] == 0.5 and read["a ratio above 0.8"][2] == 0.8
