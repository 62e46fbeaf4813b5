"""facelab.train.build: stage selection, stamps and resumability, world.json, one-line errors."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from facelab.train import build as B


def tiny_generator(path, seed: int = 0):
    from facelab.hub import export_generator
    from facelab.nets.stylegan2 import Generator

    torch.manual_seed(seed)
    return export_generator(Generator("tiny"), path, meta={"seed": seed})


def run(tmp_path, *extra):
    gen = tmp_path / "g.pt"
    if not gen.exists():
        tiny_generator(gen)
    B.main(["w", "--home", str(tmp_path), "--generator", str(gen), *extra])
    return tmp_path / "worlds" / "w"


def test_cards_stage_writes_world_json_and_build_record(tmp_path):
    folder = run(tmp_path, "--only", "cards")
    doc = json.loads((folder / "world.json").read_text())
    assert doc == {"format": "facelab.world/1", "name": "w", "generator": "generator.pt", "crop": "world"}
    assert "cards" in json.loads((folder / "build.json").read_text())["seconds"]
    assert (folder / ".done-cards").exists() and (folder / "world.md").exists()


def test_budgets_reach_world_json_and_survive_a_rerun_of_one_stage(tmp_path):
    from facelab.worlds import PRESETS, load_world
    run(tmp_path, "--only", "cards", "--budget", "cpu.project_steps=20", "--budget", "paper.mapper_steps=500")
    folder = run(tmp_path, "--only", "cards", "--budget", "cpu.wplus_steps=5")  # merged with the first run's
    assert json.loads((folder / "world.json").read_text())["budgets"] == {
        "cpu": {"project_steps": 20, "wplus_steps": 5}, "paper": {"mapper_steps": 500}}
    run(tmp_path, "--only", "cards")  # no --budget: the recorded ones stay
    world = load_world(str(folder))
    assert world.budget("cpu") == PRESETS["cpu"].replace(project_steps=20, wplus_steps=5)
    assert world.budget("cuda").mapper_steps == 500


def test_a_built_world_refuses_another_generator_and_takes_a_re_export_of_its_own(tmp_path, monkeypatch):
    from facelab.hub import export_generator, load_generator

    monkeypatch.setattr(B, "RUNNERS", {s: (lambda t, a: None) for s in B.STAGES})
    folder = run(tmp_path)  # built on g.pt, every stage stamped
    other = tiny_generator(tmp_path / "other.pt", seed=1)
    with pytest.raises(SystemExit, match=r"worlds/w was built on another generator \(weights [0-9a-f]{12}, "
                                         r".*other\.pt: [0-9a-f]{12}\); build .*other\.pt into a new world "
                                         r"\(another NAME, or --home\), or delete .*worlds/w first$"):
        B.main(["w", "--home", str(tmp_path), "--generator", str(other)])
    with pytest.raises(SystemExit, match="was built on another generator"):  # forcing the stages is no way round
        B.main(["w", "--home", str(tmp_path), "--generator", str(other), "--from", "label"])
    same = export_generator(load_generator(tmp_path / "g.pt"), tmp_path / "again.pt", meta={"note": "re-exported"})
    B.main(["w", "--home", str(tmp_path), "--generator", str(same)])  # the same weights: its stamps hold
    # the package's world: refused before anything is shipped
    work = tmp_path / "ship"
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"seconds": {}, "generator_weights_sha256": "0" * 64}))
    monkeypatch.setattr(B, "ship_generator_if_new", lambda *a: pytest.fail("shipped a generator it should refuse"))
    with pytest.raises(SystemExit, match=r"ship was built on another generator .*; build .*other\.pt into a new "
                                         r"--work"):
        B.main(["world64", "--ship", "--work", str(work), "--generator", str(other)])
    assert folder.is_dir()


def test_a_forced_rebuild_loads_its_generator_once(tmp_path, monkeypatch):
    import facelab.hub as hub

    monkeypatch.setattr(B, "RUNNERS", {s: (lambda t, a: None) for s in B.STAGES})
    run(tmp_path)
    loads, load = [], hub.load_generator
    monkeypatch.setattr(hub, "load_generator", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    run(tmp_path, "--from", "label")  # to check it; a facelab file is copied as is (a pickle loads once more)
    assert len(loads) == 1


def test_a_damaged_generator_is_refused_before_it_is_copied(tmp_path, monkeypatch):
    """It used to be copied into the world folder first, so a rerun with the right file kept the copy."""
    monkeypatch.setattr(B, "RUNNERS", {s: (lambda t, a: None) for s in B.STAGES})
    bad = tmp_path / "bad.pt"
    bad.write_text("not a generator")
    with pytest.raises(SystemExit):
        B.main(["w", "--home", str(tmp_path), "--generator", str(bad)])
    assert not (tmp_path / "worlds" / "w" / "generator.pt").exists()
    folder = run(tmp_path)  # the right file now builds
    assert (folder / "generator.pt").read_bytes() == (tmp_path / "g.pt").read_bytes()


def test_new_budgets_rewrite_world_json_of_a_finished_build(tmp_path, monkeypatch):
    ran = []
    runners = {s: (lambda t, a, s=s: ran.append(s)) for s in B.STAGES}
    monkeypatch.setattr(B, "RUNNERS", {**runners, "cards": B.stage_cards})
    folder = run(tmp_path)
    assert "budgets" not in json.loads((folder / "world.json").read_text())
    run(tmp_path, "--budget", "cpu.eval_faces=8")  # every stage stamped: only cards reruns, for the budgets
    assert ran == list(B.STAGES[:-1])
    assert json.loads((folder / "world.json").read_text())["budgets"] == {"cpu": {"eval_faces": 8}}


@pytest.mark.parametrize("flag, message", [
    ("cpu.project_steps", r"--budget 'cpu.project_steps': write PRESET.FIELD=N, e.g. cpu.project_steps=20"),
    ("cpu.project_steps=-3", r"write PRESET.FIELD=N"),
    ("gpu.project_steps=20", r"--budget: unknown budget preset 'gpu'; use one of \['cpu', 'paper'\]"),
    ("cpu.projects=20", r"--budget: budgets\['cpu'\]: .*projects"),
    ("cpu.eval_faces=0", r"--budget: budgets\['cpu'\]: Budget values are positive whole numbers, got eval_faces=0"),
])
def test_a_bad_budget_is_one_line_before_any_stage(tmp_path, flag, message):
    with pytest.raises(SystemExit, match=message):
        run(tmp_path, "--budget", flag)
    assert not (tmp_path / "worlds" / "w").exists()


def test_stamped_stage_is_skipped_and_from_reruns(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(B, "RUNNERS", {s: (lambda f, a, s=s: calls.append(s)) for s in B.STAGES})
    run(tmp_path)
    assert calls == list(B.STAGES)
    run(tmp_path)
    assert calls == list(B.STAGES)  # everything stamped: nothing reruns
    assert "skipped" in capsys.readouterr().out
    run(tmp_path, "--from", "mapper")
    assert calls[len(B.STAGES):] == ["mapper", "encoder", "cards"]
    # a --from run stopped in its first stage leaves none of the later stamps behind
    def stop(t, a):
        raise KeyboardInterrupt
    monkeypatch.setattr(B, "RUNNERS", {**B.RUNNERS, "boundaries": stop})
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "--from", "boundaries")
    assert sorted(p.name for p in (tmp_path / "worlds" / "w").glob(".done-*")) == [".done-h", ".done-label"]


def test_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown stage 'nope'.*label, h"):
        run(tmp_path, "--only", "nope")
    with pytest.raises(SystemExit, match=r"--only h and --from mapper do not go together; pass one of them"):
        run(tmp_path, "--only", "h", "--from", "mapper")
    with pytest.raises(SystemExit, match=r"generator .*missing.pt not found"):
        B.main(["w", "--home", str(tmp_path), "--generator", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit, match=r"--generator PATH"):
        B.main(["fresh", "--home", str(tmp_path)])
    with pytest.raises(ValueError, match="world.json has no field colour"):
        B.write_world_json(tmp_path, generator="generator.pt", colour="red")


def test_offline_the_ffhq_build_fails_in_one_line(tmp_path, monkeypatch, offline_ffhq):
    """The README's first FFHQ command, run without a network: the hub's one-line ConnectionError (what
    to do) and status 1, not a traceback; the trainers' entries all share this (facelab.train.loop)."""
    import os
    import subprocess
    import sys

    from facelab.train.loop import errors_in_one_line, run_main

    env = {k: v for k, v in os.environ.items() if k != "FACELAB_DEBUG"}  # FACELAB_FFHQ_URL: offline_ffhq's
    done = subprocess.run([sys.executable, "-m", "facelab.train.build", "ffhq", "--home", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: cannot download 'ffhq' from http://127.0.0.1:")
    assert "set FACELAB_FFHQ_URL to a mirror" in done.stderr

    def offline():
        raise ConnectionError("cannot download 'x'; connect")

    def interrupted():
        raise KeyboardInterrupt

    for entry in (errors_in_one_line, run_main):
        with pytest.raises(SystemExit, match=r"^error: cannot download 'x'; connect$"):
            entry(offline)
    with pytest.raises(SystemExit) as stopped:
        run_main(interrupted)
    assert stopped.value.code == 130
    monkeypatch.setenv("FACELAB_DEBUG", "1")  # the traceback, when asked for
    with pytest.raises(ConnectionError):
        run_main(offline)


def test_resolution_cuts_the_generator_into_the_world_folder(tmp_path):
    from facelab.hub import export_generator, load_generator
    from facelab.nets.stylegan2 import Generator
    src = export_generator(Generator("tiny"), tmp_path / "tiny.pt", meta={"kimg": 1.0})
    B.main(["small", "--home", str(tmp_path), "--generator", str(src), "--resolution", "16", "--only", "cards"])
    G = load_generator(tmp_path / "worlds" / "small" / "generator.pt")
    assert (G.img_resolution, G.num_ws) == (16, 6)
    assert G.meta["resolution"] == 16 and G.meta["kimg"] == 1.0 and G.meta["cut_from"] == str(src)
    with pytest.raises(SystemExit, match=r"error: resolution must be one of G's coarser blocks \[4, 8, 16\], got 64"):
        B.main(["big", "--home", str(tmp_path), "--generator", str(src), "--resolution", "64", "--only", "cards"])


def test_ship_rebuilds_world64_in_its_work_folder_through_the_shipping_stages(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(B, "RUNNERS", {s: (lambda t, a, s=s: seen.append((s, t))) for s in B.STAGES})
    work = tmp_path / "work"
    B.main(["world64", "--ship", "--work", str(work), "--from", "boundaries"])
    assert [s for s, _ in seen] == ["boundaries", "mapper", "encoder", "cards"]
    t = seen[0][1]
    assert t.ship and t.work == work and (t.generator, t.regressor) == ("world64", "H")
    assert (work / ".done-cards").exists() and not (work / "generator.pt").exists()


def test_ship_refuses_other_worlds_and_world_folder_flags(tmp_path):
    with pytest.raises(SystemExit, match=r"--ship rebuilds the package's own world, world64, not 'mini32'"):
        B.main(["mini32", "--ship", "--only", "cards"])
    with pytest.raises(SystemExit, match=r"--resolution, --home, --crop and --budget .* do not go with --ship"):
        B.main(["world64", "--ship", "--resolution", "32", "--only", "cards"])
    with pytest.raises(SystemExit, match=r"do not go with --ship \(world64's budgets are facelab.worlds.PRESETS\)"):
        B.main(["world64", "--ship", "--budget", "cpu.project_steps=20", "--only", "cards"])
    with pytest.raises(SystemExit, match=r"--work is for --ship"):
        B.main(["w", "--home", str(tmp_path), "--work", str(tmp_path), "--only", "cards"])
    with pytest.raises(SystemExit, match=r"generator .*nope.pt not found; --ship takes"):
        B.main(["world64", "--ship", "--work", str(tmp_path), "--generator", str(tmp_path / "nope.pt"),
                "--only", "cards"])


def test_shipping_the_generator_already_shipped_changes_nothing(G, tmp_path, monkeypatch):
    from facelab import hub
    shipped = []
    monkeypatch.setattr(hub, "ship_file", lambda *a, **k: shipped.append((a, k)))
    assert B.ship_generator_if_new(str(hub.weights_path("world64")), "world64") is False
    assert shipped == []
    # a new generator ships once, described with its kimg, after one load (what does not load is refused)
    loads = []
    real_load = hub.load_generator
    monkeypatch.setattr(hub, "load_generator", lambda src, **k: loads.append(src) or real_load(src, **k))
    new = hub.export_generator(G, tmp_path / "new.pt", meta={"kimg": 12.34})
    assert B.ship_generator_if_new(str(new), "world64") is True
    assert loads == [str(new)] and len(shipped) == 1
    (src, name), kw = shipped[0]
    assert (src, name, kw["kind"]) == (str(new), "world64", "generator") and "at 12.3 kimg" in kw["description"]


def test_label_stage_warns_when_the_teacher_finds_few_faces(tmp_path, monkeypatch, capsys):
    import numpy as np

    from facelab.train import regressor

    def fake_label(out, n, **kw):
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "chunk0000.npz", face_conf=np.array([0.99, 0.2, 0.1, 0.0], np.float32))

    monkeypatch.setattr(regressor, "label", fake_label)
    run(tmp_path, "--only", "label")
    out = capsys.readouterr().out
    assert "MTCNN found a face in 25.0% of the faces" in out and "warning: the teacher's detector" in out


def test_a_world_from_an_nvidia_pickle_aligns_photos_the_ffhq_way(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "copy_generator", lambda src, dest, resolution=None: torch.save({"g": torch.zeros(1)}, dest))
    monkeypatch.setattr(B, "same_generator", lambda *a, **k: None)  # the empty "pickle" below does not load
    (tmp_path / "net.pkl").write_bytes(b"")
    crop = lambda: json.loads((tmp_path / "worlds" / "nv" / "world.json").read_text())["crop"]  # noqa: E731
    B.main(["nv", "--home", str(tmp_path), "--generator", str(tmp_path / "net.pkl"), "--only", "cards"])
    assert crop() == "ffhq"
    B.main(["nv", "--home", str(tmp_path), "--only", "cards"])  # a later run keeps it (build.json)
    assert crop() == "ffhq"
    B.main(["nv", "--home", str(tmp_path), "--only", "cards", "--crop", "world"])  # unless told otherwise
    assert crop() == "world"
    with pytest.raises(SystemExit, match="--crop and --budget build a world folder"):
        B.main(["world64", "--ship", "--work", str(tmp_path / "ship"), "--crop", "ffhq", "--only", "cards"])


def test_a_first_build_stopped_before_its_record_keeps_its_crop_and_no_half_copy(tmp_path, monkeypatch):
    # killed in its first stage: build.json was never written, generator.pt was; the rerun took crop 'world'
    monkeypatch.setattr(B, "copy_generator", lambda src, dest, resolution=None: torch.save({"g": torch.zeros(1)}, dest))
    monkeypatch.setattr(B, "same_generator", lambda *a, **k: None)
    (tmp_path / "net.pkl").write_bytes(b"")
    first = next(iter(B.RUNNERS))
    ran = []
    for stage in B.RUNNERS:
        monkeypatch.setitem(B.RUNNERS, stage, lambda t, args, stage=stage: ran.append((stage, t.crop)))

    def killed(t, args):
        raise KeyboardInterrupt

    monkeypatch.setitem(B.RUNNERS, first, killed)
    argv = ["nv", "--home", str(tmp_path), "--generator", str(tmp_path / "net.pkl")]
    with pytest.raises(KeyboardInterrupt):
        B.main(argv)
    folder = tmp_path / "worlds" / "nv"
    assert (folder / "generator.pt").exists() and not (folder / "build.json").exists()
    monkeypatch.setitem(B.RUNNERS, first, lambda t, args: ran.append((first, t.crop)))
    monkeypatch.setattr(B, "copy_generator", lambda *a, **k: pytest.fail("the copy is there: not copied again"))
    B.main(argv)
    assert ran and {crop for _, crop in ran} == {"ffhq"}  # every stage of the rerun, not 'world'
    assert json.loads((folder / "build.json").read_text())["crop"] == "ffhq"
    # the copy itself goes through a temporary file: a kill mid-copy leaves no half generator.pt
    from facelab import hub
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 100_000)
    monkeypatch.setattr(hub.shutil, "copyfileobj", lambda a, b: (b.write(a.read(50_000)), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        hub.atomic_copy(src, tmp_path / "copy.bin")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == []


def test_a_world_named_after_a_registered_generator_takes_it(tmp_path):
    from facelab.hub import load_generator
    folder = tmp_path / "worlds" / "world64"
    B.main(["world64", "--home", str(tmp_path), "--only", "cards"])  # no --generator: world64 itself
    built, shipped = load_generator(folder / "generator.pt"), load_generator("world64")
    torch.testing.assert_close(built.state_dict(), shipped.state_dict(), rtol=0, atol=0)  # same keys, same bits
    assert json.loads((folder / "world.json").read_text())["generator"] == "generator.pt"


def test_ship_stages_pass_the_warm_start_and_keep_encoder_flags(tmp_path, monkeypatch):
    from facelab.train import encoder, regressor

    calls = []
    monkeypatch.setattr(regressor, "fit", lambda out, **kw: calls.append(("fit", kw)))
    monkeypatch.setattr(encoder, "main", lambda argv: calls.append(("encoder", argv)))
    work = tmp_path / "work"
    B.main(["world64", "--ship", "--work", str(work), "--only", "h", "--h-epochs", "4", "--h-lr", "1e-3",
            "--h-init", "old.pt", "--n-samples", "20000"])
    B.main(["world64", "--ship", "--work", str(work), "--only", "encoder", "--keep-encoder", "--device", "cpu"])
    B.main(["world64", "--ship", "--work", str(work), "--only", "encoder", "--encoder-steps", "9"])
    monkeypatch.setattr(regressor, "label", lambda out, n, **kw: calls.append(("label", out, n, kw)))
    monkeypatch.setattr(regressor, "test", lambda out, **kw: calls.append(("test", out, kw)))
    B.main(["world64", "--ship", "--work", str(work), "--only", "h", "--h-test", "300", "--seed", "4",
            "--device", "cpu"])
    (_, fit_kw), (_, keep), (_, train), (_, fit_again), (_, out, n, label_kw), (_, tested, test_kw) = calls
    assert out == tested == work / "h-test" and n == 300 and label_kw["seed"] == 5  # the next seed: fresh faces
    # the shipped H, shipped again with its test report; the teacher labels where the build was told
    assert test_kw == {"regressor": None, "ship": True, "device": "cpu"}
    assert fit_kw["device"] is None and fit_again["device"] == label_kw["device"] == "cpu"
    assert (fit_kw["epochs"], fit_kw["lr"], fit_kw["init"], fit_kw["ship"]) == (4, 1e-3, "old.pt", True)
    assert keep == ["--world", "world64", "--recard", "--device", "cpu"]  # re-evaluated, not retrained
    assert train[train.index("--steps") + 1] == "9" and "--ship" in train and "--recard" not in train
    assert "--init" not in train  # from scratch unless --encoder-init names an encoder
    B.main(["world64", "--ship", "--work", str(work), "--only", "encoder", "--encoder-init", "e_v2.pt"])
    assert calls[-1][1][calls[-1][1].index("--init") + 1] == "e_v2.pt"


def test_boundary_stage_fits_with_the_builds_svm_c(tmp_path, monkeypatch):
    """The boundaries' C is the build's (BOUNDARY_C unless --boundary-c says otherwise), not the
    reference's 1 that `facelab.train.boundaries` defaults to."""
    from facelab.train import boundaries

    seen = []
    monkeypatch.setattr(boundaries, "main", lambda argv: seen.append(argv))
    work = tmp_path / "work"
    B.main(["world64", "--ship", "--work", str(work), "--only", "boundaries"])
    B.main(["world64", "--ship", "--work", str(work), "--only", "boundaries", "--boundary-c", "0.5"])
    assert [float(a[a.index("--C") + 1]) for a in seen] == [B.BOUNDARY_C, 0.5]
    assert B.BOUNDARY_C < boundaries.parser().get_default("C")


def test_annealed_tails_take_the_flag_or_else_the_shipped_runs_share():
    import argparse

    a = argparse.Namespace(mapper_steps=B.MAPPER_STEPS, mapper_anneal_steps=None, encoder_steps=14460,
                           encoder_anneal_steps=None)
    assert B.mapper_anneal(a) == B.MAPPER["lr_anneal_steps"] and B.encoder_anneal(a) == 14460 // 5
    a.mapper_steps, a.encoder_steps = 40, 35  # a small build anneals the same share, exactly
    assert B.mapper_anneal(a) == 40 * B.MAPPER["lr_anneal_steps"] // B.MAPPER_STEPS and B.encoder_anneal(a) == 7
    a.mapper_anneal_steps, a.encoder_anneal_steps = 0, 3
    assert (B.mapper_anneal(a), B.encoder_anneal(a)) == (0, 3)


def test_the_mapper_stage_trains_afresh_when_its_old_run_went_through_another_h(tmp_path, monkeypatch, capsys):
    # after --only h, the finished mapper-run was "resumed" at its last step: the old H's mapper, shipped again
    import facelab.hub as hub
    import facelab.mapper as fm
    from facelab.train import mapper as tm

    run = tmp_path / "mapper-run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"old")
    calls = []

    def train(out, cfg, **kw):
        calls.append((out / "last.pt").exists())
        if len(calls) == 1:
            raise tm.TrainedThroughOther(f"{out / 'last.pt'} was trained through another generator or H; ...")
        return "mapper"

    monkeypatch.setattr(tm, "train", train)
    monkeypatch.setattr(hub, "load_generator", lambda *a, **k: None)
    monkeypatch.setattr(hub, "load_regressor", lambda *a, **k: None)
    monkeypatch.setattr(fm, "save_mapper", lambda m, path, **kw: calls.append(m))
    args = argparse.Namespace(mapper_steps=4, mapper_anneal_steps=None, seed=0, device="cpu", n_samples=64)
    B.stage_mapper(B.Target("w", tmp_path, ship=False), args)
    assert calls == [True, False, "mapper"]  # refused, the stale run removed, trained afresh, saved
    assert "training afresh" in capsys.readouterr().out


def test_an_h_stage_stopped_while_labelling_its_test_set_does_not_fit_h_again(tmp_path, monkeypatch):
    from facelab.train import regressor

    fits, labels = [], []
    monkeypatch.setattr(regressor, "fit", lambda out, **kw: fits.append(out))
    monkeypatch.setattr(regressor, "test", lambda *a, **k: None)
    monkeypatch.setattr(B, "atomic_copy", lambda *a: None)

    def label(*a, **k):
        labels.append(1)
        if len(labels) == 1:
            raise KeyboardInterrupt  # hours of labelling in: the fit before it was minutes, or hours, too

    monkeypatch.setattr(regressor, "label", label)
    args = argparse.Namespace(n_samples=600, h_epochs=1, h_lr=1e-3, h_init=None, h_width=8, h_weight=None,
                              device="cpu", h_test=100, seed=0)
    t = B.Target("w", tmp_path, ship=False)
    with pytest.raises(KeyboardInterrupt):
        B.stage_h(t, args)
    B.stage_h(t, args)
    assert len(fits) == 1 and len(labels) == 2  # resumed at the test set
