"""facelab.train.targets: issue #17's targets as claims, from evaluate's metrics, H's report and live edits."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from facelab import claims as C
from facelab import interpret as I
from facelab.train import targets as T


def metrics(fd=0.0118, floor=0.0032, recall=0.454, ref=0.818, det=0.954, det_teacher=0.969, sd=0.02):
    return {"n": 1000, "mtcnn_rate_world": det, "mtcnn_rate_teacher": det_teacher,
            "identity_diversity": {
                "psi1": {"identity_fd": fd, "identity_fd_sd": fd * 0.03, "recall": recall, "recall_sd": sd},
                "teacher": {"identity_fd": floor, "identity_fd_sd": floor * 0.07, "recall": ref, "recall_sd": sd}}}


def test_generator_targets_follow_the_rule_both_ways():
    v2 = T.generator_claims(metrics())  # world v2: 3.7x, 0.45 vs 0.65, and -1.5 +- 1.7 points
    assert [c.verdict for c in v2] == [C.DOES_NOT_HOLD, C.DOES_NOT_HOLD, C.INCONCLUSIVE]
    assert v2[0].measured.value == pytest.approx(0.0118 / 0.0032)
    assert T.generator_claims(metrics(det=0.90))[2].verdict == C.DOES_NOT_HOLD
    close = T.generator_claims(metrics(fd=0.0040, recall=0.80, det=0.98))  # n = 1000 cannot show "within 1 point" unless it is well within
    assert [c.verdict for c in close] == [C.HOLDS] * 3
    edge = T.generator_claims(metrics(fd=0.0064, recall=0.6544, det=0.959))  # exactly at each bound
    assert [c.verdict for c in edge] == [C.INCONCLUSIVE] * 3


def test_the_fd_target_keeps_the_delta_method_where_the_evaluation_also_has_a_paired_sd():
    m = metrics(fd=0.0072)  # 2.25x the floor: the two sds combined as if independent reach below 2
    assert T.generator_claims(m)[0].verdict == C.INCONCLUSIVE
    m["identity_diversity"]["psi1"]["identity_fd_ratio_sd"] = 0.05  # would decide: it under-states, unused
    assert T.generator_claims(m)[0].verdict == C.INCONCLUSIVE


def test_generator_targets_over_independent_sets_take_one_value_per_set():
    runs = [metrics(fd=0.0094 + 0.0003 * i, det=0.965 + 0.002 * (i % 3)) for i in range(6)]  # teacher 96.9 %
    assert {T.generator_claims(m)[2].verdict for m in runs} == {C.INCONCLUSIVE}  # one set: ±1.6 points
    fd, recall, detection = T.generator_claims_over_sets(runs)
    assert fd.n == recall.n == detection.n == 6 and "6000 faces" in detection.note
    assert fd.measured.value == pytest.approx(np.mean([(0.0094 + 0.0003 * i) / 0.0032 for i in range(6)]))
    assert fd.verdict == recall.verdict == C.DOES_NOT_HOLD
    assert detection.verdict == C.HOLDS  # -0.2 points on average, t over six sets: within one point
    assert T.generator_claims_over_sets(runs[:5])[2].verdict == C.INCONCLUSIVE  # five sets: too few to say


def test_independent_sets_are_read_only_when_they_measured_the_card_s_generator(tmp_path, capsys):
    import json
    facts = {"kimg": 976.912, "params_G": 1494360, "train_minutes": 268.8}
    for seed in (10, 20):
        (tmp_path / f"eval{seed}.json").write_text(json.dumps({**metrics(), **facts, "seed": seed}))
    assert [m["seed"] for m in T.independent_sets(tmp_path, facts)] == [10, 20]
    assert T.independent_sets(tmp_path / "none", facts) == []
    assert T.independent_sets(tmp_path, {**facts, "kimg": 1200.0}) == []  # a newer generator: left out, said
    assert "eval10.json, eval20.json measured another generator" in capsys.readouterr().out


def test_h_targets_use_the_measured_ceiling_and_say_when_there_is_none():
    report = {"val": {a: {"n": 2000, "r": r} for a, r in zip(T.EDITED, (0.56, 0.77, 0.87))},
              "ceiling": {a: {"n": 1900, "mirror_r": c * c, "ceiling": c} for a, c in zip(T.EDITED, (0.78, 0.85, 0.9))}}
    rows = T.h_claims(report)
    # bounds 0.70, 0.765, 0.81: 0.56 is far below; 0.77 is within its interval (+-0.02); 0.87 is clear
    assert [r.verdict for r in rows] == [C.DOES_NOT_HOLD, C.INCONCLUSIVE, C.HOLDS]
    # a fresh test set, when H's report has one, is what the targets are judged on
    tested = dict(report, test={"faces": 10_000, "folder": "h-test",
                                "agreement": {a: {"n": 9800, "r": r} for a, r in zip(T.EDITED, (0.75, 0.70, 0.87))},
                                "ceiling": report["ceiling"]})
    rows = T.h_claims(tested)
    assert [r.verdict for r in rows] == [C.HOLDS, C.DOES_NOT_HOLD, C.HOLDS]  # +-0.01 at n = 9800
    assert all("10000 fresh test faces" in r.statement and r.n == 9800 for r in rows)
    # a test with r / ceiling's interval over faces (regressor.ceiling_ratio) is judged on that, against 0.9
    ratio = {a: {"value": v, "low": v - 0.02, "high": v + 0.02, "n": 9800, "how": "bootstrap over faces"}
             for a, v in zip(T.EDITED, (0.85, 0.95, 0.91))}
    rows = T.h_claims(dict(tested, test={**tested["test"], "ratio": ratio}))
    assert [r.verdict for r in rows] == [C.DOES_NOT_HOLD, C.HOLDS, C.INCONCLUSIVE]  # age's r alone said "holds"
    assert all(r.rule == "> 0.9" and r.note == "measured: r / ceiling" and r.measured.n == 9800 for r in rows)
    del report["ceiling"]
    assert {r.verdict for r in T.h_claims(report)} == {C.INCONCLUSIVE}
    r = T.fisher_interval(0.5, 103)
    assert r.low < 0.5 < r.high and math.isclose(math.atanh(r.high) - math.atanh(0.5), 1.96 / 10)


def test_edit_targets_label_on_the_device_they_are_given(monkeypatch):
    import facelab.nets.attributes as A
    from facelab.worlds import load_world

    seen = []

    def spy(images, *, attributes, device=None, **kw):  # the labelers' device, and labels that vary
        seen.append(device)
        return {a: torch.linspace(0, 1, len(images)) for a in attributes}

    monkeypatch.setattr(A, "label_images", spy)
    monkeypatch.setenv("FACELAB_DEVICE", "meta")  # what get_device() would give: never asked for here
    world = load_world("world64", device="cpu")
    T.edit_claims(world.G, {"normal": world.boundaries("w")}, n=4, device="cpu", mahalanobis_codes=200)
    assert seen and all(torch.device(d) == torch.device("cpu") for d in seen)


def test_edit_targets_are_measured_on_the_shipped_world():
    pytest.importorskip("onnxruntime")
    from facelab.worlds import load_world
    world = load_world("world64", device="cpu")
    directions = {"normal": world.boundaries("w"), "pattern": I.world_patterns(world, "w", n=2000)}
    edits = T.edit_claims(world.G, directions, n=8, device="cpu", mahalanobis_codes=2000, lost=("normal",))
    rows, patterns = edits["normal"], edits["pattern"]
    assert len(rows) == len(patterns) == 2 * len(T.EDITED)  # an edit row and an identity row each
    assert all("activation pattern" in r.statement for r in patterns)
    assert not any("activation pattern" in r.statement for r in rows)
    # the step is two of each direction's own distance std; the pattern's leaves the distribution less
    mahalanobis = [float(r.note.split(" Mahalanobis")[0].rsplit(" ", 1)[1]) for r in (rows[0], patterns[0])]
    assert mahalanobis[1] < mahalanobis[0]
    rows = rows + patterns
    # the edits move the teacher the way they were asked to (a flipped sign or a lost step would not):
    # age and smile clearly on these 8 faces (0.5 and 0.78 teacher std), male only weakly (0.09)
    assert rows[0].measured.value > 0.2 and rows[4].measured.value > 0.2
    # an edit row's n is the faces its change rests on (labelled before and after both edits), not the 8 edited
    found = [int(re.search(r"on the (\d+) of 8 faces found after both", r.note).group(1)) for r in rows[::2]]
    assert all(0 < r.n <= f for r, f in zip(rows[::2], found)) and min(found) < 8  # a face was lost: n fell
    # one identity sample per face: its +2 and -2 edits share the face, so they are averaged, not pooled as 16
    assert all(r.measured.n == 8 and r.note.startswith("per face") for r in rows[1::2])
    # the same edit rows with the faces lost after an edit labelled where they were before it: no fewer faces
    lost = edits["normal" + T.LOST]
    assert len(lost) == len(T.EDITED) and all("faces lost after an edit labelled" in r.statement for r in lost)
    after = [int(re.search(r"on the (\d+) of 8 faces found after both", r.note).group(1)) for r in rows[:6:2]]
    counted = [int(re.search(r"on the (\d+) of 8 faces found before", r.note).group(1)) for r in lost]
    relabelled = [sum(int(k) for k in re.match(r"(\d+) and (\d+) faces lost", r.note).groups()) for r in lost]
    assert all(a <= c for a, c in zip(after, counted)) and any(relabelled) == any(a < c for a, c in zip(after, counted))
    assert all("teacher std per unit" in r.note and "Mahalanobis units" in r.note for r in rows[::2])
    text = T.targets_markdown(rows[:6], {"metrics": "m", "h": "h", "edits_n": 8}, patterns=rows[6:])
    assert "of 6 targets hold" in text and "| claim | n |" in text and "activation pattern" in text
    over = T.generator_claims_over_sets([metrics()] * 6)
    text = T.targets_markdown(rows[:6], {"metrics": "m", "h": "h", "edits_n": 8, "sets": "`S`"}, over_sets=over)
    assert "over 6 independent evaluations (`S`;" in text and text.count("| claim | n |") == 2


def test_judging_a_candidate_needs_its_own_card(tmp_path):
    with pytest.raises(SystemExit, match="candidate --regressor or --boundaries needs --card"):
        T.main(["world64", "--regressor", str(tmp_path / "H.pt")])


def test_mahalanobis_length_is_one_std_along_each_axis():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((20_000, 3)) * np.array([4.0, 1.0, 0.25])
    length = T._mahalanobis_length(codes)
    for axis, sd in enumerate((4.0, 1.0, 0.25)):
        assert math.isclose(length(np.eye(3)[axis]) * sd, 1.0, rel_tol=0.03)


def test_an_edit_s_interval_carries_the_uncertainty_of_the_teacher_std_it_is_counted_in():
    # Skewed smile-like labels of 190 faces, each edit moving its face by one true std (noisy): a t
    # interval of the per-face change over the estimated std took that std as exact and covered the
    # true strength, 1, on 70 % of the sets; the bootstrap over faces the targets use covers it on about 90 %.
    rng = np.random.default_rng(0)
    true_sd = math.sqrt(0.5 * 2.0 / (2.5 ** 2 * 3.5))  # Beta(0.5, 2)
    boot = t = 0
    for i in range(200):
        base = rng.beta(0.5, 2.0, 190)
        d = true_sd * (1.0 + 0.6 * rng.standard_normal(190))
        e = C.bootstrap_ci(T._edit_strength, base, base + d, base - d, n_boot=400, seed=i)
        boot += e.low <= 1.0 <= e.high
        old = C.mean_ci(d / base.std())
        t += old.low <= 1.0 <= old.high
    assert boot / 200 >= 0.88 and t / 200 <= 0.8, (boot, t)
    assert math.isnan(T._edit_strength(np.ones(5), np.full(5, np.nan), np.full(5, np.nan)))  # nothing found
