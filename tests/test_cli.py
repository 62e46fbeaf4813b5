"""The ``facelab`` command line, run as a user runs it: in a subprocess, judged by exit code, files and messages."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelab import cli
from facelab import interpret as I
from facelab.photos import sample_photos


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "grace_hopper.jpg"
    sample_photos()["grace_hopper"].image.save(path)
    return path


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("facelab")
    assert script.is_file(), "pip install -e . installs the facelab console script ([project.scripts])"
    module = subprocess.run([sys.executable, "-m", "facelab", "--help"], capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and "facelab" in module.stdout  # python -m facelab, without the script


def test_help_lists_the_commands_and_the_edits():
    top = run("--help")
    assert top.returncode == 0
    for command in ("edit", "invert", "worlds"):
        assert command in top.stdout
    edit = run("edit", "--help")
    assert edit.returncode == 0
    for flag in ("--age", "--smile", "--method", "--by", "--world", "--device", "-o OUTPUT"):
        assert flag in edit.stdout


def test_usage_errors_exit_2_with_one_line(photo):
    none = run("edit", str(photo))
    assert none.returncode == 2
    assert none.stderr.strip().splitlines() == ["facelab: error: no edit asked for; add e.g. --age +5 or --smile 0.3 "
                                                "(see facelab edit --help)"]
    bad = run("edit", str(photo), "--age", "ten")
    assert bad.returncode == 2 and "'ten' is not a number" in bad.stderr
    for flag, value, message in (("--age", "nan", "'nan' is not a finite change"),
                                 ("--scale", "0", "0 is not in 1..16"), ("--scale", "1000", "1000 is not in 1..16")):
        r = run("edit", str(photo), "--smile", "0.1", flag, value)  # refused before the photo is read
        assert r.returncode == 2 and f"argument {flag}: {message}" in r.stderr, r.stderr


def test_missing_photo_is_one_line_and_exit_1(tmp_path):
    r = run("edit", str(tmp_path / "nope.jpg"), "--age", "60", "--method", "encoder")  # checked before any
    # calibration: +60 years would also warn that it is far along the age boundary
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no photo at" in lines[0] and "Traceback" not in r.stderr


def test_facelab_debug_shows_a_failed_photo_s_traceback(tmp_path):
    import os

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)  # no face in it
    argv = [sys.executable, "-m", "facelab.cli", "invert", str(blank), "--method", "encoder"]
    loud = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "FACELAB_DEBUG": "1"})
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "FaceAlignmentError" in loud.stderr
    # (without FACELAB_DEBUG the same failure is one line: c_blank.png in the folder test)


def test_a_folder_is_edited_and_failures_reported_at_the_end(tmp_path, photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo, folder / "a_grace.jpg")
    (folder / "b_broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(folder / "c_blank.png")  # no face in it
    out = tmp_path / "edited"
    r = run("edit", str(folder), "-o", str(out), "--smile", "0.2", "--method", "encoder", "--scale", "1")
    assert r.returncode == 1, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_grace.png"]
    assert Image.open(out / "a_grace.png").size == (64, 64)
    assert "b_broken.jpg" in r.stderr and "c_blank.png" in r.stderr
    assert "edit: 1 of 3 photos done, 2 failed (listed above)" in r.stderr
    assert r.stdout.strip() == f"{folder / 'a_grace.jpg'}: saved {out / 'a_grace.png'}"
    assert "Traceback" not in r.stderr


def test_invert_saves_a_latent_and_the_reconstruction(tmp_path, photo):
    out, image = tmp_path / "g.pt", tmp_path / "g.png"
    r = run("invert", str(photo), "-o", str(out), "--image", str(image), "--method", "encoder")
    assert r.returncode == 0, r.stderr
    saved = torch.load(out, weights_only=True)
    assert saved["format"] == "facelab.latent/1" and saved["method"] == "encoder" and saved["world"] == "world64"
    assert saved["ws"].shape == (1, 10, 128) and torch.isfinite(saved["ws"]).all()
    assert Image.open(image).size == (256, 256)  # 64 px, scale 4
    assert r.stdout.strip() == f"{photo}: saved {out} and {image}"  # a one-photo run used to say nothing


def test_invert_writes_a_folder_s_reconstructions_beside_their_latents(tmp_path, photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(photo, folder / f"{name}.jpg")
    out = tmp_path / "out"
    r = run("invert", str(folder), "-o", str(out), "--image", str(tmp_path / "one.png"), "--method", "encoder",
            "--scale", "1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a.pt", "b.png", "b.pt"]
    assert not (tmp_path / "one.png").exists()  # not one file, overwritten by each photo


def test_invert_with_pti_keeps_the_tuned_weights(tmp_path, photo):
    import argparse
    from dataclasses import replace

    from facelab.pti import load_pti

    world = cli.load_world("world64", device="cpu")
    world.budgets["tiny"] = replace(world.budgets["cpu"], upload_tune_steps=5)
    args = argparse.Namespace(method="pti", budget="tiny", image=tmp_path / "a.png", scale=1)
    cli._one_invert(world, photo, tmp_path / "a.pt", args, many=False)
    res = load_pti(tmp_path / "a.pt", world.G)  # the tuned weights, not only the pivots
    recon = torch.from_numpy(np.asarray(Image.open(tmp_path / "a.png"), np.float32)).permute(2, 0, 1) / 127.5 - 1
    tuned = (res.reconstruct().clamp(-1, 1)[0] - recon).abs().mean()
    untuned = (world.G.synthesis(res.pivots, noise_mode="const").clamp(-1, 1)[0] - recon).abs().mean()
    assert res.steps_run == 5 and tuned < 0.01 < untuned  # the saved image is the tuned generator's


def test_worlds_lists_what_is_built():
    r = run("worlds")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert any(line.startswith("world64") and "complete" in line for line in lines)
    assert any(line.startswith("ffhq") and "python -m facelab.train.build ffhq" in line for line in lines)


def test_one_unreadable_world_does_not_hide_the_others(tmp_path, monkeypatch, capsys):
    for name, text in (("a_bad", "{x"), ("b_next", "{}")):
        (tmp_path / "worlds" / name).mkdir(parents=True)
        (tmp_path / "worlds" / name / "world.json").write_text(text)
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path))
    assert cli.main(["worlds"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("a_bad") and "unreadable: cannot read" in line for line in lines)
    assert any(line.startswith("b_next") for line in lines)


def test_unknown_world_is_one_line(photo):
    r = run("edit", str(photo), "--age", "1", "--world", "nowhere")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("facelab: error: unknown world 'nowhere'")


def test_apply_edits_validates_names():
    world = cli.load_world("world64", device="cpu")
    ws = world.G.mapping(torch.randn(1, world.G.z_dim))
    assert cli.apply_edits(world, ws, {"age": 0}) is ws  # nothing asked, nothing done
    with pytest.raises(ValueError, match="unknown editor"):
        cli.apply_edits(world, ws, {"age": 1}, by="clip")
    with pytest.raises(ValueError, match="unknown method"):
        cli.invert(world, torch.zeros(1, 3, 64, 64), method="e4e")


def test_several_photos_need_an_output_folder(tmp_path, photo):
    second = tmp_path / "second.jpg"
    shutil.copy(photo, second)
    r = run("edit", str(photo), str(second), "--age", "1", "-o", str(tmp_path / "out.png"))
    assert r.returncode == 2 and "names a file; give a folder" in r.stderr


def test_no_result_overwrites_a_photo_or_another_result_and_each_is_what_its_name_says(tmp_path, photo):
    """Checked before the world loads (exit 2, one line, nothing written): an output that is an input,
    two photos saved as one file, a suffix that does not say what the file holds, a file on the way."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo, folder / "p.jpg")
    Image.open(photo).save(folder / "p.png")  # edited into the folder, p.jpg's result would replace p.png
    before = {q.name: q.read_bytes() for q in folder.iterdir()}
    (tmp_path / "afile").write_text("x")
    refused = [
        ("would overwrite the photo", ("edit", str(folder / "p.jpg"), "--age", "5", "-o", str(folder / "p.jpg"))),
        ("would overwrite the photo", ("edit", str(folder), "--age", "5", "-o", str(folder))),
        ("would overwrite the photo", ("invert", str(photo), "-o", str(tmp_path / "l.pt"), "--image", str(photo))),
        ("would both be saved as", ("edit", str(folder / "p.jpg"), str(folder / "p.png"), "--age", "5",
                                    "-o", str(tmp_path / "out"))),
        ("holds an image; name it .png", ("edit", str(photo), "--age", "5", "-o", str(tmp_path / "out.txt"))),
        ("holds a latent; name it .pt", ("invert", str(photo), "-o", str(tmp_path / "latent.jpg"))),
        ("is a file, not a folder", ("edit", str(photo), "--age", "5", "-o", str(tmp_path / "afile" / "x.png"))),
    ]
    for message, args in refused:
        r = run(*args, "--method", "encoder")
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert {q.name: q.read_bytes() for q in folder.iterdir()} == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["afile", "grace_hopper.jpg", "photos"]
    r = run("edit", str(photo), "--age", "5", "--method", "encoder", "--scale", "1", "-o", str(tmp_path / "e.jpg"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "e.jpg").format == "JPEG"  # the suffix's format, not PNG bytes under .jpg


def test_a_device_the_machine_lacks_is_one_line(tmp_path, photo, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("FACELAB_DEBUG", raising=False)
    assert cli.main(["edit", str(photo), "--age", "1", "--device", "cuda", "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["facelab: error: device 'cuda' requested but CUDA is not available; use cpu"]
    monkeypatch.setenv("FACELAB_DEVICE", "cuda")  # from the environment: the variable is named
    assert cli.main(["edit", str(photo), "--age", "1", "-o", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.strip().endswith("use cpu or unset FACELAB_DEVICE")


def test_interfacegan_edits_are_calibrated_and_warn_when_far():
    world = cli.load_world("world64", device="cpu")
    ws = world.G.mapping(torch.randn(4, world.G.z_dim, generator=torch.Generator().manual_seed(0)))
    with pytest.warns(UserWarning, match=r"age \+60 asks for .* std along its boundary") as caught:
        far = cli.editor(world, {"age": 60})
        cli.apply_edits(world, ws, {"age": 60})
    assert [Path(w.filename).name for w in caught] == ["test_cli.py"] * 2  # the caller's line, not cli.py's
    near = cli.editor(world, {"age": 1})
    b = world.boundaries("w")["age"]
    moved = lambda e: (b.distance(e(ws)[:, 0]) - b.distance(ws[:, 0])).mean()  # noqa: E731
    assert 0 < moved(near) < moved(far)  # older means further along the age normal, in proportion
    assert float(moved(far) / moved(near)) == pytest.approx(60, rel=1e-3)


def test_a_pattern_edit_of_a_projected_boundary_says_why_it_has_none(tmp_path):
    world = cli.load_world("world64", device="cpu")
    b = world.boundaries("w")
    b["age|male"] = I.project_boundary(b["age"], b["male"])  # age with male held fixed
    conditioned = world.with_files(boundaries=I.save_boundaries(tmp_path / "b.pt", b))
    with pytest.raises(KeyError, match=r"age\|male boundary is projected off male.*use --by interfacegan"):
        cli.editor(conditioned, {"age|male": 1}, by="pattern")
    ws = conditioned.G.mapping(torch.randn(4, conditioned.G.z_dim, generator=torch.Generator().manual_seed(0)))
    edited = cli.editor(conditioned, {"age|male": 0.1})(ws)  # --by interfacegan (the default) edits along it
    moved = {a: b[a].distance(edited[:, 0]) - b[a].distance(ws[:, 0]) for a in ("age|male", "male")}
    assert (moved["age|male"] > 1e-3).all()  # along the projected normal, every face
    assert moved["male"].abs().max() < 1e-4  # and not at all along the normal it was projected off
    with pytest.raises(KeyError, match=r"has no boundary for 'beard'; it has .*smile"):
        cli.editor(conditioned, {"beard": 1}, by="pattern")


def test_pattern_edits_move_along_the_activation_pattern_each_by_its_own_slope():
    world = cli.load_world("world64", device="cpu")
    ws = world.G.mapping(torch.randn(4, world.G.z_dim, generator=torch.Generator().manual_seed(0)))
    normal = world.boundaries("w")["age"]
    codes = I.sample_latents(world.G, cli.PATTERN_CODES, space="w", seed=0).w
    pattern = I.activation_pattern(normal, codes)
    with pytest.warns(UserWarning, match=r"age \+40 asks for .* std"):  # forty years are far along any direction
        cli.apply_edits(world, ws, {"age": 40})
    moves = {by: cli.apply_edits(world, ws, {"age": 2}, by=by) - ws for by in ("interfacegan", "pattern")}
    along = moves["pattern"][:, 0] / moves["pattern"][:, 0].norm(dim=1, keepdim=True)
    assert torch.allclose(along @ pattern.normal, torch.ones(4), atol=1e-4)  # every face, every layer, same step
    assert float(pattern.normal @ normal.normal) < 0.99  # a direction of its own
    # the same two years, each direction's step set by its own measured slope of H's age
    for (by, m), b in zip(moves.items(), (normal, pattern)):
        slope = I.attribute_slope(world.G, b, world.H)
        assert float(m[0, 0].norm()) == pytest.approx(2 / slope, rel=1e-4), by
