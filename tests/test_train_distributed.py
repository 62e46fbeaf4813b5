"""Data-parallel training (facelab/train/distributed.py): torchrun with the gloo backend on the CPU.

The contract of issue #17: one step of 2 ranks at batch b/2 each is the update of 1 process at batch
b, within float tolerance (the sums run in another order), and a checkpoint written under 2 ranks
resumes under 1. Each torchrun here starts two interpreters (about 10 s on 2 cores).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from facelab.train.distributed import Shard
from facelab.train.gan import CHECKPOINT, STOP_CHECK_STEPS, TrainConfig, Trainer, main

FLAGS = ["--preset", "tiny", "--batch", "8", "--snap-kimg", "100", "--device", "cpu"]
STATES = ("G", "G_ema", "D")


def torchrun(nproc: int, out, kimg: float) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "facelab.train.gan", "--out", str(out), "--kimg", str(kimg), *FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[:6000]


def one_process(out, kimg: float) -> None:
    main(["--out", str(out), "--kimg", str(kimg), *FLAGS])


def checkpoint(out) -> dict:
    return torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)


def assert_same_run(a: dict, b: dict, *, atol: float) -> None:
    assert a["state"]["step"] == b["state"]["step"] and a["state"]["nimg"] == b["state"]["nimg"]
    assert a["state"]["pl_mean"] == pytest.approx(b["state"]["pl_mean"], rel=1e-4)
    for name in STATES:
        for k, x in a[name].items():
            y = b[name][k]
            if x.is_floating_point():
                assert torch.allclose(x, y, atol=atol, rtol=1e-4), \
                    f"{name}.{k}: max difference {(x - y).abs().max():.2e}"
            else:
                assert torch.equal(x, y), f"{name}.{k}"
    for name in ("opt_G", "opt_D"):
        for i, st in a[name]["state"].items():
            v, w = st["exp_avg_sq"], b[name]["state"][i]["exp_avg_sq"]
            assert torch.allclose(v, w, rtol=1e-3, atol=1e-12), f"{name} second moment {i}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One step of batch 8 on 2 ranks and in 1 process, and each resumed by 1 process for a second."""
    root = tmp_path_factory.mktemp("ddp")
    torchrun(2, root / "two", kimg=0.008)
    one_process(root / "one", kimg=0.008)
    first = checkpoint(root / "two"), checkpoint(root / "one")
    # Seeded, a restart that ignored the checkpoint would end on the same bits: count the steps taken
    steps, step = [], Trainer.step
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "step", lambda self: steps.append(self.state.step) or step(self))
        one_process(root / "two", kimg=0.016)  # a 2-rank checkpoint resumed by one process
    one_process(root / "one", kimg=0.016)
    return first, (checkpoint(root / "two"), checkpoint(root / "one")), steps


def test_two_ranks_at_half_batch_make_the_update_of_one_process(runs):
    (two, one), _, _ = runs
    assert two["train_config"]["batch"] == one["train_config"]["batch"] == 8  # the global batch is recorded
    # The step really moved the weights (else equality would prove nothing) ...
    fresh = Trainer(TrainConfig.from_dict(one["train_config"]), "unused", device="cpu", progress=False)
    moved = (one["G"]["synthesis.b32.torgb.weight"] - fresh.G.state_dict()["synthesis.b32.torgb.weight"]).abs()
    assert moved.max() > 1e-4
    # ... by the same amount on both: Adam's first step is about lr * sign(gradient), so this also
    # says every gradient (the lazy R1 and path-length ones included: step 0 runs both) agrees in sign.
    assert_same_run(two, one, atol=1e-5)


def test_a_checkpoint_of_two_ranks_resumes_in_one_process(runs):
    _, (two, one), steps = runs
    assert steps == [1]  # the second step only: the first came from the 2-rank checkpoint
    assert two["state"]["step"] == 2
    assert_same_run(two, one, atol=1e-4)


def test_shards_interleave_the_global_batch_and_refuse_one_that_does_not_split():
    x = torch.arange(8)
    assert [Shard(r, 2).take(x).tolist() for r in range(2)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert Shard().take(x) is x
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        Trainer(TrainConfig(preset="tiny", batch=8), "unused", device="cpu", shard=Shard(0, 3))


def test_ranks_agree_on_stopping_every_few_steps_not_on_every_step(tmp_path):
    """Each agreement is a collective that waits for the device, so the ranks hold one only every
    STOP_CHECK_STEPS steps, on the same steps (the step count is shared); one process checks every step."""
    asked = []

    class Counting(Shard):  # without a process group: the collectives are identities here
        def average_gradients(self, params) -> None:
            pass

        def average_(self, t):
            return t

        def any(self, flag, device=None):
            asked.append(trainer.state.step)
            return flag

    cfg = TrainConfig(preset="tiny", batch=4, snap_kimg=1000.0, kimg=1000.0)
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False, shard=Counting(0, 2))
    trainer.train(max_steps=12)
    assert asked == [0, STOP_CHECK_STEPS]
    asked.clear()
    trainer = Trainer(cfg, tmp_path / "one", device="cpu", progress=False, shard=Counting(0, 1))
    trainer.train(max_steps=3)
    assert asked == [0, 1, 2]
