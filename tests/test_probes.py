"""The diagnostic probes in scripts/ run and print their tables (their numbers go into model cards and notes)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]


def probe(script: str, *args: str) -> list[list[str]]:
    """Run ``scripts/SCRIPT`` and return the cells of its table's data rows."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ")]  # not the |---| rule
    return [[c.strip() for c in r] for r in rows[1:]]  # after the header


@pytest.mark.skipif(not (ROOT / "facelab/weights/encoder_world64.pt").is_file(), reason="no shipped encoder")
def test_latent_discriminator_probe_reports_one_row_per_learning_rate():
    rows = probe("probe_latent_disc.py", "--faces", "40", "--steps", "20", "--lrs", "2e-5,2e-3")
    assert [r[0] for r in rows] == ["2e-05", "0.002"]
    assert all(0 <= float(r[1]) <= 1 and float(r[2]) >= 0 for r in rows)  # balanced accuracy, mean |logit|


def test_mtcnn_batch_probe_compares_each_batch_size_with_one_at_a_time():
    pytest.importorskip("facenet_pytorch")
    rows = probe("probe_mtcnn_batch.py", "--faces", "12", "--batches", "1,12")
    assert [r[0] for r in rows] == ["one at a time (detect_faces)", "batches of 1 (MTCNN.detect)",
                                    "batches of 12 (MTCNN.detect)"] and rows[0][1] == "–"
    assert rows[1][1] == "0 of 12"  # facenet's own call on one image is detect_faces (the probe can tell)
    assert re.fullmatch(r"\d+ of 12", rows[2][1])  # a count of the faces that moved (none did on 12 faces here)
    assert rows[2][1] != "0 of 12" or float(rows[2][2]) < 1e-3  # none moved: the largest move is below the cut


@pytest.mark.skipif(not (ROOT / "facelab/weights/encoder_world64.pt").is_file(), reason="no shipped encoder")
def test_encoder_comparison_finds_no_difference_between_an_encoder_and_itself():
    shipped = "facelab/weights/encoder_world64.pt"
    rows = probe("compare_encoders.py", shipped, shipped, "--n", "8")
    assert len(rows) == 5 and all(r[5] == "**inconclusive**" for r in rows)  # every paired difference is 0
    assert all("tested: 0 [0, 0]" in r[2] for r in rows)


def test_ffhq_build_timing_runs_every_stage_and_estimates_each(tmp_path):
    # The GPU script on a small random architecture and tiny counts: every stage after H runs with
    # world64's H standing in, and the summary has one estimate per timed stage.
    pytest.importorskip("facenet_pytorch")
    env = {**os.environ, "PYTHON": sys.executable, "PRESET": "mini32", "HOME_DIR": str(tmp_path / "home"),
           "OUT": str(tmp_path / "out"), "LABEL_N": "40", "BOUNDARY_N": "300", "MAPPER_STEPS": "2",
           "ENCODER_STEPS": "2", "FACELAB_DEVICE": "cpu"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_ffhq_build.sh")], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    rows = [line.split("|")[1:-1] for line in (tmp_path / "out" / "summary.md").read_text().splitlines()[2:]]
    assert [r[0].strip() for r in rows] == ["label", "boundaries", "mapper", "encoder"]
    assert all(float(r[2]) > 0 and float(r[4]) > 0 for r in rows)
    assert (tmp_path / "home" / "worlds" / "ffhq-random" / "world.json").is_file()  # the cards stage ran too


def test_h_feature_probe_finds_a_label_the_features_carry_and_not_noise(tmp_path):
    import numpy as np

    from facelab.nets.regressor import OUTPUTS
    g = np.random.default_rng(0)
    level = g.integers(40, 216, 600)
    blocks = level[:, None, None, None] + g.integers(-30, 31, (600, 3, 8, 8))  # each image a grey level, blotched
    img = np.kron(blocks, np.ones((1, 1, 8, 8), np.int64)).astype(np.uint8)  # 64 px
    labels = {a: g.normal(size=600).astype(np.float32) for a in OUTPUTS}  # noise ...
    labels["age"] = (level / 10).astype(np.float32)  # ... but age is the grey level
    np.savez(tmp_path / "chunk0000.npz", images=img, psi=np.ones(600, np.float32), **labels)
    rows = probe("probe_h_features.py", "--labels", str(tmp_path), "--train", "500", "--val", "100", "--ridge", "1,10")
    assert [(r[0], r[1]) for r in rows] == [(a, s) for a in ("age", "male", "smile") for s in ("1", "10")]
    r = {(row[0], row[1]): float(row[2]) for row in rows}
    assert r["age", "1"] > 0.5 and abs(r["male", "1"]) < 0.3  # held-out r: brightness yes, noise no


def _eval_runs(values: dict[str, np.ndarray], boot_sd: float) -> list[dict]:
    """``evaluate``-shaped runs: metric m of run i is values[m][i], every bootstrap sd boot_sd."""
    def row(i: int) -> dict:
        return {**{m: float(v[i]) for m, v in values.items()}, **{f"{m}_sd": boot_sd for m in values}}

    k = len(next(iter(values.values())))
    return [{"n": 50, "identity_diversity": {s: row(i) for s in ("psi1", "psi07", "teacher")},
             "mtcnn_rate_world": 0.9, "mtcnn_rate_teacher": 0.92} for i in range(k)]


def test_metric_spread_probe_tells_a_wide_bootstrap_from_one_that_under_states(tmp_path):
    import json

    spec = importlib.util.spec_from_file_location("probe_metric_spread", ROOT / "scripts" / "probe_metric_spread.py")
    spread = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spread)
    g = np.random.default_rng(0)
    values = {m: 0.5 + 0.01 * g.standard_normal(12) for m in ("identity_fd", "precision", "recall")}  # true sd 0.01

    def verdicts(boot_sd: float) -> set[str]:
        return {r["verdict"] for r in spread.spread_rows(_eval_runs(values, boot_sd))}

    assert verdicts(0.05) == {"errs wide"} and verdicts(0.002) == {"under-states"}
    assert verdicts(0.01) == {"consistent"}
    with pytest.raises(ValueError, match="at least 3"):
        spread.spread_rows(_eval_runs({m: v[:2] for m, v in values.items()}, 0.01))
    # the command reuses each seed's evaluation from --out and measures nothing when all are there
    for i, run in enumerate(_eval_runs(values, 0.05)[:4]):
        (tmp_path / f"eval{10 * i}.json").write_text(json.dumps(run))
    rows = probe("probe_metric_spread.py", "--seeds", "0,10,20,30", "--n", "50", "--out", str(tmp_path))
    assert len(rows) == 12 and {r[-1] for r in rows[:9]} == {"errs wide"}
    # the world card's targets: each world FD here equals its floor, so the ratio is 1 in every run
    # and does not spread at all, yet its interval adds both FDs' sds as if independent
    fd, recall, detection = spread.target_rows(_eval_runs(values, 0.01))
    assert fd["metric"].startswith("identity FD") and fd["mean"] == 1.0 and fd["verdict"] == "errs wide"
    assert recall["mean"] == pytest.approx(0.2 * values["recall"].mean())
    assert detection["sd_between"] == 0.0 and detection["verdict"] == "errs wide"
    # evaluate's paired bootstrap sd of the ratio, where the runs have it, gets a row of its own
    paired = _eval_runs(values, 0.01)
    for run in paired:
        run["identity_diversity"]["psi1"].update(identity_fd_ratio=1.0, identity_fd_ratio_sd=0.5)
    fd, *_, row = spread.target_rows(paired)
    assert row["metric"].endswith("(paired bootstrap sd)") and row["sd_bootstrap"] == 0.5
    assert fd["sd_bootstrap"] != 0.5 and row["verdict"] == "errs wide"  # the targets' own row keeps its sd
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "probe_metric_spread.py"), "--seeds", "0,1,10"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode != 0 and "space them 3 apart" in out.stderr


def test_claims_coverage_probe_reports_every_interval_at_every_n():
    rows = probe("probe_claims_coverage.py", "--reps", "8", "--ns", "6,12")
    assert len(rows) == 14 and {r[2] for r in rows} == {"6", "12"}
    assert {r[0].split(" (")[1] for r in rows} == {"mean_ci)", "difference_ci)", "proportion_ci)", "bootstrap_ci)"}
    for r in rows:
        value, lo, hi = (float(x) for x in re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", r[3]).groups())
        assert lo <= value <= hi and value * 8 == round(value * 8)  # a share of the 8 simulated sets
        assert r[4] == ("under-covers" if hi < 0.95 else "over-covers" if lo > 0.95 else "nominal")
    assert len(probe("probe_claims_coverage.py", "--reps", "8", "--ns", "6", "--only", "per unit")) == 2


def test_ema_probe_compares_the_raw_generator_and_the_rounded_average_with_the_average(tmp_path):
    rows = probe("probe_ema.py", "--n", "16", "--out", str(tmp_path))
    assert [r[0] for r in rows] == ["identity FD", "precision", "recall", "recall, psi = 0.7", "MTCNN detection"]
    assert all(len(r) == 6 for r in rows)  # three generators, two differences from the EMA
    assert {p.name for p in tmp_path.iterdir()} == {f"{g}.{x}" for g in ("raw", "ema", "ema16") for x in ("pt", "json")}
    fd = [float(c.split(" ± ")[0]) for c in rows[0][1:4]]
    assert fd[0] != fd[1]  # the raw generator is not its average
    assert abs(fd[2] - fd[1]) < 0.02 * fd[1]  # float16 rounding hardly moves the average's faces
