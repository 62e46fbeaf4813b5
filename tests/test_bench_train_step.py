"""bench/train_step.py runs every path on the CPU: timing rows per batch size and the profile table."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_bench_times_each_batch_and_profiles(bench, tmp_path, capsys):
    out = bench.main(["--device", "cpu", "--batches", "2,4", "--steps", "1", "--warmup", "0",
                      "--profile", "2", "--rows", "5", "--json", str(tmp_path / "b.json")])
    assert [r["batch"] for r in out["rows"]] == [2, 4]
    assert all(r["images_per_s"] > 0 for r in out["rows"])
    assert "convolution" in out["profile"]  # the operators table names the convolutions
    assert (tmp_path / "b.json").exists() and "| 4 |" in capsys.readouterr().out
