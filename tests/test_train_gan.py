"""GAN training (facelab/train/gan.py) on the tiny preset: outputs, exact resume, EMA, CLI guards.

A few CPU steps of a 32 px network against the real teacher; every run lives in a temp directory.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal

import pytest
import torch
from PIL import Image

from facelab.hub import load_file, load_generator
from facelab.train.gan import CHECKPOINT, TrainConfig, Trainer, main, train


def config(**overrides) -> TrainConfig:
    base = dict(preset="tiny", batch=4, r1_interval=2, pl_interval=2, snap_kimg=1000.0, kimg=1000.0)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    """A finished two-step run (shared, read-only for the tests)."""
    out = tmp_path_factory.mktemp("run2")
    trainer = train(out, config(), device="cpu", max_steps=2, progress=False)
    return out, trainer


def test_a_run_writes_checkpoint_generator_samples_and_log(run2):
    out, trainer = run2
    assert (trainer.state.step, trainer.state.nimg) == (2, 8)

    ckpt = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    assert ckpt["state"]["step"] == 2 and ckpt["state"]["nimg"] == 8
    assert ckpt["train_config"]["preset"] == "tiny"

    assert (out / "generator.pt").is_file()

    (grid,) = (out / "samples").glob("*.png")
    with Image.open(grid) as im:
        assert im.size == (8 * 34 + 2, 8 * 34 + 2)  # 64 samples, 8 per row, 32 px + 2 px padding

    lines = (out / "log.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    assert {"step", "kimg", "loss_g", "loss_d"} <= set(rec)
    assert all(math.isfinite(v) for v in rec.values())
    assert json.loads((out / "train_config.json").read_text())["batch"] == 4


def test_a_fresh_or_crashed_run_s_log_starts_where_its_training_does(tmp_path):
    train(tmp_path, config(), device="cpu", max_steps=12, progress=False)  # logs steps 1 and 11
    with (tmp_path / "log.jsonl").open("a") as f:  # as if it had crashed after a step 21 it never saved
        f.write(json.dumps({"step": 21, "kimg": 0.084}) + "\n")
    train(tmp_path, config(), device="cpu", max_steps=10, progress=False)  # resumes at 12: steps 12..21 again
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 11, 21]  # one line per step, the last from this run
    assert "loss_g" in json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])  # not the stale line
    train(tmp_path, config(), device="cpu", resume=False, max_steps=1, progress=False)  # a fresh run
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [1]


def test_init_from_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*nope\.pt"):
        main(["--preset", "tiny", "--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "nope.pt"),
              "--kimg", "0.004", "--batch", "4"])


def test_the_log_records_the_lazy_regularisers_too(tmp_path):
    train(tmp_path, config(r1_interval=2, pl_interval=4), device="cpu", max_steps=21, progress=False)
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 11, 21]
    assert all("r1" in r for r in recs) and [("loss_pl" in r) for r in recs] == [True, False, True]


def test_the_exported_generator_is_the_ema_generator_and_loads_safely(run2):
    out, trainer = run2
    G = load_generator(out / "generator.pt", device="cpu")  # weights_only=True
    assert G.img_resolution == 32
    assert G.meta["steps"] == 2 and G.meta["preset"] == "tiny"
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(G(z, noise_mode="const"), trainer.G_ema(z, noise_mode="const"))


def test_resume_is_exact(run2, tmp_path):
    once = train(tmp_path / "once", config(), device="cpu", max_steps=4, progress=False)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run2[0], resumed_dir)  # stopped after 2 steps
    resumed = train(resumed_dir, config(), device="cpu", max_steps=2, progress=False)
    assert (resumed.state.step, resumed.state.nimg) == (once.state.step, once.state.nimg) == (4, 16)
    assert resumed.state.pl_mean == once.state.pl_mean
    for name in ("G", "G_ema", "D"):
        a, b = getattr(once, name).state_dict(), getattr(resumed, name).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"
    # ... and the run really moved in its last two steps.
    first = run2[1].G.state_dict()
    assert not torch.equal(first["synthesis.b32.torgb.weight"], once.G.state_dict()["synthesis.b32.torgb.weight"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_after_its_step_and_the_run_resumes_exactly(tmp_path, monkeypatch, signum,
                                                                            foreground):
    once = train(tmp_path / "once", config(), device="cpu", max_steps=3, progress=False)
    taken, step = [], Trainer.step

    def signalling_step(self):  # the signal arrives in the middle of the second step
        taken.append(1)
        if len(taken) == 2:
            os.kill(os.getpid(), signum)
        return step(self)

    monkeypatch.setattr(Trainer, "step", signalling_step)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stopped = train(tmp_path / "stopped", config(), device="cpu", max_steps=5, progress=False)
    assert stopped.stopped and stopped.state.step == 2  # that step was finished, and no other begun
    assert load_file(tmp_path / "stopped" / CHECKPOINT)["state"]["step"] == 2
    assert [signal.getsignal(s) for s in handlers] == list(handlers.values())  # the handlers are put back
    monkeypatch.setattr(Trainer, "step", step)
    resumed = train(tmp_path / "stopped", config(), device="cpu", max_steps=1, progress=False)
    assert not resumed.stopped and resumed.state.step == 3
    for name in ("G", "G_ema", "D"):
        a, b = getattr(once, name).state_dict(), getattr(resumed, name).state_dict()
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_one_step_updates_every_parameter_and_the_ema_follows_its_half_life(tmp_path):
    # A 4-image half-life with batch 4 and no ramp-up: the EMA moves exactly half way to G.
    trainer = Trainer(config(ema_kimg=0.004, ema_rampup=None), tmp_path, device="cpu", progress=False)
    G0 = {k: v.clone() for k, v in trainer.G.named_parameters()}
    D0 = {k: v.clone() for k, v in trainer.D.named_parameters()}
    stats = trainer.step()
    assert {"loss_g", "loss_d", "loss_pl", "r1"} <= set(stats)  # step 0 runs both regularisers
    assert all(math.isfinite(v) for v in stats.values())
    for k, p in trainer.G.named_parameters():
        assert not torch.equal(p, G0[k]), f"G.{k} did not change"
    for k, p in trainer.D.named_parameters():
        assert not torch.equal(p, D0[k]), f"D.{k} did not change"
    ema = dict(trainer.G_ema.named_parameters())
    for k, p in trainer.G.named_parameters():
        torch.testing.assert_close(ema[k], 0.5 * (p + G0[k]))
    dist = lambda a, b: sum((a[k] - b[k]).square().sum() for k in G0)  # noqa: E731
    G1 = dict(trainer.G.named_parameters())
    assert 0 < dist(ema, G0) < dist(G1, G0)  # the EMA lags behind G
    assert torch.equal(trainer.G_ema.w_avg, trainer.G.w_avg)  # buffers are copied, not averaged
    assert trainer.G.w_avg.abs().sum() > 0  # and w_avg is being tracked in training


def test_regularisers_run_lazily(tmp_path):
    trainer = Trainer(config(r1_interval=3, pl_interval=2), tmp_path, device="cpu", progress=False)
    seen = [set(trainer.step()) for _ in range(3)]
    assert ["r1" in s for s in seen] == [True, False, False]
    assert ["loss_pl" in s for s in seen] == [True, False, True]


def test_channels_last_is_the_same_training_step_in_another_memory_layout(tmp_path):
    # --channels-last changes only how activations are laid out: two steps from the same seed
    # leave G and both discriminators where the default layout does (to float rounding).
    runs = {}
    for layout in (False, True):
        t = Trainer(config(disc="both", channels_last=layout), tmp_path / str(layout), device="cpu", progress=False)
        stats = [t.step() for _ in range(2)]
        assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for s in stats for v in s.values())  # no host sync
        runs[layout] = {**{f"G.{k}": v for k, v in t.G.state_dict().items()},
                        **{f"D.{k}": v for k, v in t.D.state_dict().items()},
                        **{f"P.{k}": v for k, v in t.P.heads.state_dict().items()}}
    assert runs[True]["D.b32.conv0.weight"].is_contiguous(memory_format=torch.channels_last)
    for k, v in runs[False].items():
        # atol: a fifth of one Adam step (lr 0.0025), which sign-normalises even a rounding-sized gradient
        torch.testing.assert_close(runs[True][k], v, rtol=1e-3, atol=5e-4, msg=lambda m, k=k: f"{k}: {m}")


def test_loading_a_checkpoint_of_another_preset_names_it(run2, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(run2[0], out)
    with pytest.raises(ValueError, match="'tiny'"):
        train(out, config(preset="world64"), device="cpu", max_steps=1, progress=False)
    other_file = tmp_path / "state.pt"
    torch.save({"G": {}}, other_file)
    trainer = Trainer(config(), tmp_path / "x", device="cpu", progress=False)
    with pytest.raises(ValueError, match="not a facelab GAN checkpoint"):
        trainer.load(other_file)


def test_cli_resumes_only_with_the_same_settings(tmp_path, capsys):
    out = str(tmp_path / "cli")
    flags = ["--out", out, "--preset", "tiny", "--batch", "4", "--snap-kimg", "100", "--device", "cpu"]
    main(flags + ["--kimg", "0.008"])  # 2 steps
    with pytest.raises(SystemExit) as e:
        main(flags[:4] + ["--batch", "8"] + flags[6:] + ["--kimg", "0.016"])
    assert "--fresh" in str(e.value) and "batch" in str(e.value)
    main(flags + ["--kimg", "0.016"])  # a longer run with the same settings resumes
    ckpt = torch.load(tmp_path / "cli" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert (ckpt["state"]["step"], ckpt["state"]["nimg"]) == (4, 16)
    assert "resuming" in capsys.readouterr().out


def test_the_ema_half_life_follows_the_batch_as_stylegan2_ada_s_and_a_resume_keeps_its_own(tmp_path):
    # ADA: batch * 10 / 32 kimg, about 312 steps at any batch; a fixed 5 kimg was 20 steps at the GPU's 256
    assert [TrainConfig(batch=b).ema_kimg for b in (16, 64, 256)] == [5.0, 20.0, 80.0]
    assert TrainConfig(batch=256, ema_kimg=5.0).ema_kimg == 5.0  # given: kept
    out = str(tmp_path / "ema")
    flags = ["--out", out, "--preset", "tiny", "--batch", "4", "--snap-kimg", "100", "--device", "cpu"]
    main(flags + ["--kimg", "0.008", "--ema-kimg", "5"])  # a run from before the rule, which stored 5.0
    main(flags + ["--kimg", "0.016"])  # resumed without the flag: its own half-life, not the rule's 1.25
    ckpt = torch.load(tmp_path / "ema" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert ckpt["state"]["step"] == 4 and ckpt["train_config"]["ema_kimg"] == 5.0
    with pytest.raises(SystemExit, match=r"different settings \{'ema_kimg': \(5.0, 2.0\)\}"):
        main(flags + ["--kimg", "0.024", "--ema-kimg", "2"])


def test_train_config_rejects_odd_batches():
    with pytest.raises(ValueError, match="even"):
        TrainConfig(batch=3)


@pytest.mark.parametrize("flag, value, message", [("--kimg", "-1", "kimg must be > 0, got -1.0"),
                                                  ("--snap-kimg", "0", "snap_kimg must be > 0, got 0.0"),
                                                  ("--ema-kimg", "nan", "ema_kimg must be > 0, got nan"),
                                                  ("--r1-gamma", "-2", "r1_gamma must be >= 0"),
                                                  ("--batch", "0", "batch must be a positive even number")])
def test_bad_settings_are_one_line_before_a_run_folder_exists(tmp_path, flag, value, message):
    """--kimg -1 used to train no step and write a random generator.pt as 'done'; --snap-kimg 0 divided by
    zero after creating the run folder."""
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "FACELAB_DEBUG"}
    done = subprocess.run([sys.executable, "-m", "facelab.train.gan", "--out", str(out), "--preset", "tiny",
                           "--device", "cpu", flag, value], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert message in done.stderr and not out.exists()


def test_train_config_is_frozen_and_reads_saved_configs(run2):
    out, trainer = run2
    with pytest.raises(AttributeError):
        trainer.cfg.batch = 8  # frozen: variants are made with replace()
    assert trainer.cfg.replace(batch=8).batch == 8 and trainer.cfg.batch == 4
    saved = json.loads((out / "train_config.json").read_text())
    assert TrainConfig.from_dict(saved) == trainer.cfg  # JSON's list of betas becomes a tuple again
    with pytest.raises(ValueError, match="TrainConfig has no bacth"):
        TrainConfig.from_dict({**saved, "bacth": 4})


def test_the_committed_world64_checkpoint_config_still_loads():
    from pathlib import Path
    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "world64"
    if not (ckpt / CHECKPOINT).exists():
        pytest.skip("no committed world64 checkpoint")
    saved = torch.load(ckpt / CHECKPOINT, map_location="cpu", weights_only=True)["train_config"]
    cfg = TrainConfig.from_dict(saved)  # what `python -m facelab.train.gan --out ...` resumes with
    assert cfg.preset == "world64" and cfg.betas == (0.0, 0.99)
    if (ckpt / "train_config.json").exists():  # written by the run's last invocation (budgets may differ)
        assert TrainConfig.from_dict(json.loads((ckpt / "train_config.json").read_text())).preset == "world64"


@pytest.mark.parametrize("disc", ["projected", "both"])
def test_resume_is_exact_with_a_projected_discriminator(disc, tmp_path):
    cfg = config(disc=disc)
    once = train(tmp_path / "once", cfg, device="cpu", max_steps=3, progress=False)
    train(tmp_path / "resumed", cfg, device="cpu", max_steps=2, progress=False)
    resumed = train(tmp_path / "resumed", cfg, device="cpu", max_steps=1, progress=False)
    assert resumed.state.step == once.state.step == 3
    for name in ("G", "G_ema", "P") + (("D",) if disc == "both" else ()):
        a, b = getattr(once, name).state_dict(), getattr(resumed, name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"


def test_checkpoints_are_lean_and_say_which_discriminator_they_lack(tmp_path):
    trainer = train(tmp_path / "p", config(disc="projected"), device="cpu", max_steps=1, progress=False)
    ckpt = torch.load(tmp_path / "p" / CHECKPOINT, map_location="cpu", weights_only=True)
    # beta1 = 0: Adam's first moment is the last gradient and is not stored; nor is the frozen ONet.
    assert all("exp_avg" not in st and "exp_avg_sq" in st for st in ckpt["opt_G"]["state"].values())
    assert ckpt["P"] and not any(k.startswith("features.") for k in ckpt["P"])
    assert "D" not in ckpt and trainer.D is None
    other = Trainer(config(disc="both"), tmp_path / "b", device="cpu", progress=False)
    with pytest.raises(ValueError, match="--disc projected"):
        other.load(tmp_path / "p" / CHECKPOINT)


def test_a_warm_start_takes_the_generator_and_counters_and_a_fresh_projected_head(run2, tmp_path):
    src, first = run2
    trainer = Trainer(config(disc="projected"), tmp_path / "warm", device="cpu", progress=False)
    fresh_head = {k: v.clone() for k, v in trainer.P.heads.state_dict().items()}
    trainer.load(src / CHECKPOINT, warm_start=True)
    assert (trainer.state.step, trainer.state.nimg) == (first.state.step, first.state.nimg)
    for k, v in first.G_ema.state_dict().items():
        assert torch.equal(trainer.G_ema.state_dict()[k], v), k
    assert all(torch.equal(trainer.P.heads.state_dict()[k], v) for k, v in fresh_head.items())


def test_a_cpu_time_budget_stops_the_invocation(tmp_path):
    trainer = train(tmp_path / "cpu", config(cpu_minutes=0.5 / 60), device="cpu", progress=False)
    assert 1 <= trainer.state.step < 1000 and trainer.state.cpu_seconds > 0  # kimg=1000 was never the limit
    assert json.loads((tmp_path / "cpu" / "log.jsonl").read_text().splitlines()[0])["cpu"] > 0


def test_the_committed_checkpoint_is_compact_and_resumes(tmp_path):
    from facelab.train.gan import commit_checkpoint, read_committed_log

    run = tmp_path / "run"
    trainer = train(run, config(disc="both"), device="cpu", max_steps=2, progress=False)
    (run / "train_config.json").unlink()  # as in a run folder brought back from a GPU: the checkpoint says it
    stats = commit_checkpoint(run, tmp_path / "committed")
    small = torch.load(tmp_path / "committed" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert json.loads((tmp_path / "committed" / "train_config.json").read_text()) == json.loads(
        json.dumps(small["train_config"]))
    assert stats["mib"] * 2 ** 20 < 0.75 * (run / CHECKPOINT).stat().st_size
    log = read_committed_log(tmp_path / "committed")
    assert log and not (tmp_path / "committed" / "log.jsonl").exists()  # only the gzip copy is committed
    train(run, config(disc="both"), device="cpu", max_steps=10, progress=False)  # the run goes on...
    commit_checkpoint(run, tmp_path / "committed")                               # ...and is committed again
    steps = [json.loads(line)["step"] for line in read_committed_log(tmp_path / "committed")]
    assert steps[:len(log)] == [json.loads(line)["step"] for line in log] and steps == sorted(set(steps))
    assert steps[-1] == 11  # steps 1, 11, 21, ...: the run reached step 12
    assert small["G"]["synthesis.b32.torgb.weight"].dtype == torch.float16
    assert all(v["exp_avg_sq"].dtype == torch.bfloat16 for v in small["opt_G"]["state"].values() if v["exp_avg_sq"].ndim)
    small = torch.load(tmp_path / "committed" / CHECKPOINT, map_location="cpu", weights_only=True)
    trainer = Trainer(config(disc="both"), tmp_path / "x", device="cpu", progress=False)
    trainer.load(run / CHECKPOINT)
    for k, v in trainer.G_ema.state_dict().items():  # the product is kept exactly
        assert torch.equal(small["G_ema"][k], v), k
    assert 0 < stats["rounding"] < stats["adam_step"]  # far below one optimiser step in this tiny run
    resumed = Trainer(config(disc="both"), tmp_path / "again", device="cpu", progress=False)
    resumed.load(tmp_path / "committed" / CHECKPOINT)
    assert all(p.dtype == torch.float32 for p in resumed.G.parameters())
    torch.testing.assert_close(resumed.G.state_dict()["synthesis.b32.torgb.weight"],
                               trainer.G.state_dict()["synthesis.b32.torgb.weight"], rtol=1e-2, atol=1e-2)
    assert math.isfinite(resumed.step()["loss_g"])


def test_the_committed_log_is_gzip_deterministic_and_takes_over_a_plain_one(tmp_path):
    from facelab.train.gan import COMMITTED_LOG, _append_log, read_committed_log

    run, a, b = tmp_path / "run", tmp_path / "a", tmp_path / "b"
    for d in (run, a, b):
        d.mkdir()
    lines = [json.dumps({"step": s, "kimg": s * 0.016}) for s in (1, 10, 20, 30)]
    (a / "log.jsonl").write_text("".join(line + "\n" for line in lines[:2]))  # an older commit's plain log
    (run / "log.jsonl").write_text("".join(line + "\n" for line in lines[1:]))  # overlaps at step 10
    _append_log(run / "log.jsonl", a)
    assert read_committed_log(a) == lines and not (a / "log.jsonl").exists()
    (b / "log.jsonl").write_text("".join(line + "\n" for line in lines[:2]))
    import time

    time.sleep(1.1)  # a gzip header with the time in it would now differ
    _append_log(run / "log.jsonl", b)
    assert (a / COMMITTED_LOG).read_bytes() == (b / COMMITTED_LOG).read_bytes()


def test_a_run_that_branches_from_an_earlier_state_replaces_the_abandoned_log_tail(tmp_path, capsys):
    from facelab.train.gan import _append_log, read_committed_log

    run, dest = tmp_path / "run", tmp_path / "committed"
    run.mkdir(), dest.mkdir()
    line = lambda s, loss: json.dumps({"step": s, "loss": loss})  # noqa: E731
    trunk = [line(s, 1.0) for s in (1, 10, 20)]
    (run / "log.jsonl").write_text("".join(x + "\n" for x in trunk + [line(30, 1.0), line(40, 1.0)]))
    _append_log(run / "log.jsonl", dest)                       # the committed run reached step 40
    branch = [line(30, 2.0), line(40, 2.0), line(50, 2.0)]     # warm-started again from step 20's state
    (run / "log.jsonl").write_text("".join(x + "\n" for x in branch))
    _append_log(run / "log.jsonl", dest)
    assert read_committed_log(dest) == trunk + branch
    assert "leaves the committed one at step 30; 2 committed lines" in capsys.readouterr().out


def test_any_checkpoint_exports_its_ema_generator_for_evaluation(tmp_path):
    from facelab.hub import load_generator
    from facelab.train.gan import commit_checkpoint, main

    run = tmp_path / "run"
    trainer = train(run, config(disc="both"), device="cpu", max_steps=2, progress=False)
    commit_checkpoint(run, tmp_path / "committed")
    for src in (run, tmp_path / "committed"):  # a run's own checkpoint and the compact committed copy
        main(["--out", str(src), "--export-ema", str(tmp_path / "g.pt")])
        G = load_generator(tmp_path / "g.pt", device="cpu")
        assert all(torch.equal(G.state_dict()[k], v) for k, v in trainer.G_ema.state_dict().items())
        assert G.meta["kimg"] == trainer.meta()["kimg"] and G.meta["exported_from"].endswith(CHECKPOINT)
    with pytest.raises(SystemExit, match="no checkpoint.pt in .*--out must be a run directory"):
        main(["--out", str(tmp_path / "nothing"), "--export-ema", str(tmp_path / "g.pt")])


def test_train_refuses_to_resume_with_another_recipe_from_python_too(tmp_path):
    # only the command line compared settings: train(out, batch=8) resumed a batch-4 run as batch 8, silently
    train(tmp_path, config(), device="cpu", max_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"different settings \{'batch': \(4, 8\)"):
        train(tmp_path, config(batch=8), device="cpu", max_steps=1, progress=False)
    assert train(tmp_path, config(kimg=1.0), device="cpu", max_steps=1, progress=False).state.step == 2  # budgets may


def test_a_fresh_run_over_an_old_one_leaves_no_checkpoint_that_its_log_no_longer_describes(tmp_path, capsys,
                                                                                           monkeypatch):
    train(tmp_path, config(), device="cpu", max_steps=2, progress=False)
    assert (tmp_path / CHECKPOINT).exists()

    def killed(self):
        raise RuntimeError("killed before the first snapshot")

    monkeypatch.setattr(Trainer, "step", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train(tmp_path, config(seed=5), device="cpu", resume=False, progress=False)
    assert "the earlier checkpoint" in capsys.readouterr().out
    # the old run's step-2 checkpoint stayed beside the new run's emptied log and config: a plain rerun resumed it
    assert not (tmp_path / CHECKPOINT).exists()
    assert json.loads((tmp_path / "train_config.json").read_text())["seed"] == 5
