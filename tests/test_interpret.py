"""InterFaceGAN (facelab.interpret): boundaries, conditional projection, editing, analysis, files."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab import hub
from facelab import interpret as I
from facelab.imaging import resize
from facelab.nets.regressor import OUTPUTS as ATTRIBUTES
from facelab.nets.regressor import AttributeRegressor


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def complement_projection(n: torch.Tensor, conds: list[torch.Tensor]) -> torch.Tensor:
    """Reference: remove the span of the conditions from n with a QR basis, then normalise."""
    Q, _ = torch.linalg.qr(torch.stack(conds).T.double())  # [D, k] orthonormal basis of the span
    r = n.double() - Q @ (Q.T @ n.double())
    return r / r.norm()


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3))  # [N]


@pytest.fixture(scope="module")
def separable():
    """Gaussian latents (mean shifted along the true normal) scored by a linear function of them."""
    gen = torch.Generator().manual_seed(0)
    D, N = 16, 3000
    n_true = unit(torch.randn(D, generator=gen))
    x = torch.randn(N, D, generator=gen) + 2.0 * n_true  # the hyperplane does not pass through 0
    score = x @ n_true + 0.05 * torch.randn(N, generator=gen)
    return x, score, n_true


# --- project_boundary -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_project_boundary_is_unit_and_orthogonal_to_every_condition(k):
    gen = torch.Generator().manual_seed(k)
    primal = unit(torch.randn(1, 32, generator=gen))  # the reference's [1, D] layout
    conds = [unit(torch.randn(32, generator=gen)) for _ in range(k)]
    out = I.project_boundary(primal, *conds)
    assert out.shape == primal.shape and out.dtype == primal.dtype
    assert out.norm().item() == pytest.approx(1.0, abs=1e-6)
    for c in conds:
        assert abs(float(out[0] @ c)) < 1e-5
    assert float(out[0] @ primal[0]) > 0  # still the primal's direction, not its opposite


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_project_boundary_matches_least_squares_reference(k):
    gen = torch.Generator().manual_seed(10 + k)
    primal = unit(torch.randn(24, generator=gen, dtype=torch.float64))
    # correlated conditions, like age and gender boundaries
    conds = [unit(primal + 1.5 * torch.randn(24, generator=gen, dtype=torch.float64)) for _ in range(k)]
    out = I.project_boundary(primal, *conds)
    torch.testing.assert_close(out, complement_projection(primal, conds), atol=1e-9, rtol=0)


def test_project_boundary_handles_parallel_conditions_and_refuses_the_span():
    gen = torch.Generator().manual_seed(3)
    a, b = unit(torch.randn(16, generator=gen)), unit(torch.randn(16, generator=gen))
    primal = unit(a + 0.3 * torch.randn(16, generator=gen))
    # two identical conditions: the closed form would divide by ~0; the answer is orthogonal to a
    out = I.project_boundary(primal, a, a.clone())
    torch.testing.assert_close(out.double(), complement_projection(primal, [a]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="span of the conditions"):
        I.project_boundary(unit(0.6 * a - 0.8 * b), a, b)
    with pytest.raises(ValueError, match="span"):
        I.project_boundary(a, -a)
    with pytest.raises(ValueError, match="dimension"):
        I.project_boundary(a, torch.randn(8))
    assert I.project_boundary(a) is a  # no conditions: unchanged, as in the reference


def test_projected_boundary_edits_without_moving_the_conditions():
    gen = torch.Generator().manual_seed(4)
    age = I.Boundary(unit(torch.randn(32, generator=gen)), offset=0.7, attribute="age")
    male = I.Boundary(unit(age.normal + torch.randn(32, generator=gen)), offset=-0.4, attribute="male")
    smile = I.Boundary(unit(torch.randn(32, generator=gen)), offset=1.2, attribute="smile")
    cond = I.project_boundary(age, male, smile)
    assert isinstance(cond, I.Boundary) and cond.name == "age|male,smile" and cond.space == "w"
    w = torch.randn(10, 32, generator=gen)
    w2 = I.edit(w, cond, 3.0)
    for c in (male, smile):
        torch.testing.assert_close(c.distance(w2), c.distance(w), atol=1e-4, rtol=0)
    assert (age.distance(w2) - age.distance(w)).min() > 0  # older, by less than 3 (part was removed)
    # The projected hyperplane meets the primal one on the conditions' hyperplanes: reach those with
    # male, then smile-orthogonal-to-male (which keeps male at 0), then set the projected distance.
    w0 = I.edit_to_distance(I.edit_to_distance(w, male, 0.0), I.project_boundary(smile, male), 0.0)
    torch.testing.assert_close(torch.stack([male.distance(w0), smile.distance(w0)]), torch.zeros(2, 10),
                               atol=1e-4, rtol=0)
    on_plane = I.edit_to_distance(w0, cond, 0.0)
    torch.testing.assert_close(age.distance(on_plane), torch.zeros(10), atol=1e-4, rtol=0)
    z_boundary = I.Boundary(smile.normal, space="z", attribute="smile")
    with pytest.raises(ValueError, match="conditions are in \\['z'\\]"):
        I.project_boundary(age, z_boundary)


# --- train_boundary ---------------------------------------------------------------------------


def test_train_boundary_recovers_a_known_normal(separable):
    x, score, n_true = separable
    b = I.train_boundary(x, score, ratio=0.05, attribute="toy", threshold="median")
    assert isinstance(b, I.Boundary) and b.space == "w" and b.dim == 16
    assert b.normal.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert float(b.normal @ n_true) > 0.95  # oriented towards higher scores
    r = b.report
    assert (r.n_samples, r.n_invalid, r.n_chosen, r.n_train, r.n_val) == (3000, 0, 150, 105, 45)
    assert r.train_accuracy == 1.0 and r.val_accuracy >= 0.95
    assert r.all_accuracy > 0.9 and r.remaining_accuracy > 0.85 and r.score_correlation > 0.95
    # the hyperplane sits between the extremes, near the median projection (2.0 along n_true)
    assert abs(r.distance_mean) < 0.2 * r.distance_std
    assert float(np.median(score.numpy())) == pytest.approx(r.threshold)
    assert r.distance_std == pytest.approx(1.0, abs=0.1)  # unit-variance latents along the normal

    flipped = I.train_boundary(x, -score, ratio=0.05)
    assert float(flipped.normal @ n_true) < -0.95


def test_train_boundary_drops_nan_and_invalid_scores(separable):
    x, score, n_true = separable
    score = score.clone()
    score[::10] = float("nan")
    score[1::10] = -999.0
    b = I.train_boundary(x, score, ratio=0.05, invalid_value=-999.0)
    assert b.report.n_invalid == 600 and b.report.n_samples == 2400
    assert float(b.normal @ n_true) > 0.95 and math.isfinite(b.report.score_correlation)
    # W+ codes [N, L, D] are flattened, and a Latents needs a space
    plus = I.train_boundary(x.reshape(3000, 2, 8), score, ratio=0.05, invalid_value=-999.0)
    assert plus.space == "w+" and plus.dim == 16
    lat = I.Latents(z=x, w=x)
    with pytest.raises(ValueError, match="space="):
        I.train_boundary(lat, score)


def test_train_boundary_errors_teach():
    x, s = torch.randn(100, 4), torch.randn(100)
    with pytest.raises(ValueError, match="one per latent"):
        I.train_boundary(x, s[:99])
    with pytest.raises(ValueError, match="too few samples.*sample more latents or raise ratio"):
        I.train_boundary(x, s, ratio=0.02)
    nan = s.clone()
    nan[:90] = float("nan")
    with pytest.raises(ValueError, match="90 dropped"):
        I.train_boundary(x, nan, ratio=0.3)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        I.train_boundary(torch.randn(100), s)
    with pytest.raises(ValueError, match="unit norm"):
        I.Boundary(torch.ones(4))


# --- editing ----------------------------------------------------------------------------------


def test_edit_and_edit_to_distance_in_w():
    gen = torch.Generator().manual_seed(5)
    b = I.Boundary(unit(torch.randn(32, generator=gen)), offset=-1.5, attribute="a")
    w = torch.randn(6, 32, generator=gen)
    d0 = I.signed_distance(w, b)
    assert d0.shape == (6,)
    torch.testing.assert_close(I.signed_distance(I.edit(w, b, 2.5), b), d0 + 2.5)
    steps = torch.linspace(-3, 3, 6)
    torch.testing.assert_close(I.signed_distance(I.edit(w, b, steps), b), d0 + steps)
    torch.testing.assert_close(I.signed_distance(I.edit_to_distance(w, b, 1.0), b), torch.ones(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(I.signed_distance(I.edit_to_distance(w, b, steps), b), steps, atol=1e-5, rtol=0)
    moved = I.edit(w, b, 1.0) - w  # only along the normal
    torch.testing.assert_close(moved, b.normal.expand(6, -1))
    with pytest.raises(ValueError, match="do not match"):
        I.edit(torch.randn(2, 16), b, 1.0)
    with pytest.raises(ValueError, match="one per latent"):
        I.edit(w, b, torch.ones(5))


def test_edit_in_w_plus_with_w_and_w_plus_boundaries():
    gen = torch.Generator().manual_seed(6)
    L, D = 8, 32
    b = I.Boundary(unit(torch.randn(D, generator=gen)), offset=0.3)
    ws = torch.randn(4, L, D, generator=gen)
    d = I.signed_distance(ws, b)
    assert d.shape == (4, L)  # one distance per layer
    torch.testing.assert_close(I.signed_distance(I.edit(ws, b, 2.0), b), d + 2.0)
    out = I.edit_to_distance(ws, b, -1.0, layers=[1, 2, 5])
    got = I.signed_distance(out, b)
    torch.testing.assert_close(got[:, [1, 2, 5]], torch.full((4, 3), -1.0), atol=1e-5, rtol=0)
    untouched = [0, 3, 4, 6, 7]
    assert torch.equal(out[:, untouched], ws[:, untouched])  # style-range editing
    assert torch.equal(I.edit(ws, b, 1.0, layers=[0])[:, 1:], ws[:, 1:])
    with pytest.raises(ValueError, match="layers"):
        I.edit(ws, b, 1.0, layers=[8])

    bp = I.Boundary(unit(torch.randn(L * D, generator=gen)), offset=-0.2, space="w+")
    dp = I.signed_distance(ws, bp)
    assert dp.shape == (4,)
    torch.testing.assert_close(dp, ws.flatten(1) @ bp.normal - 0.2)
    torch.testing.assert_close(I.signed_distance(I.edit(ws, bp, 1.5), bp), dp + 1.5)
    torch.testing.assert_close(I.signed_distance(I.edit_to_distance(ws, bp, 2.0), bp), torch.full((4,), 2.0),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="already a W\\+"):
        I.edit(ws, bp, 1.0, layers=[0])
    # what a student types first: a name, all the boundaries, a step as text
    for bad, message in (("age", r"got the str 'age'; pass one boundary, e.g. B\['age'\]"),
                         ({"age": b}, r"got the dict with keys \['age'\]; pass one boundary")):
        with pytest.raises(TypeError, match=message):
            I.edit(ws, bad, 1.0)
    with pytest.raises(TypeError, match="step must be a number .* got the str '3'"):
        I.edit(ws, b, "3")
    # a Z boundary has a W boundary's shape in many worlds, but W+ latents are codes of W
    bz = I.Boundary(b.normal, offset=0.3, space="z", attribute="age")
    for f in (lambda: I.edit(ws, bz, 1.0), lambda: I.signed_distance(ws, bz), lambda: I.edit_to_distance(ws, bz, 0)):
        with pytest.raises(ValueError, match="boundary 'age' lives in Z, and these latents are W\\+"):
            f()


# --- the generator side -----------------------------------------------------------------------


def test_sample_latents_is_a_seeded_stream(G):
    a = I.sample_latents(G, 1200, seed=3)
    b = I.sample_latents(G, 300, seed=3, start=900, batch_size=7)
    assert a.z.shape == (1200, G.z_dim) and a.w.shape == (1200, G.w_dim) and a.ws is None
    assert torch.equal(a.z[900:], b.z) and torch.allclose(a.w[900:], b.w, atol=1e-6)
    torch.testing.assert_close(a.w[:5], G.mapping(a.z[:5])[:, 0])
    t = I.sample_latents(G, 5, seed=3, psi=0.5)
    torch.testing.assert_close(t.w, G.mapping.w_avg.lerp(a.w[:5], 0.5), atol=1e-5, rtol=0)
    p = I.sample_latents(G, 64, space="w+", mixing=1.0)
    assert p.ws.shape == (64, G.num_ws, G.w_dim) and p.codes("w+").shape == (64, G.num_ws * G.w_dim)
    assert torch.equal(p.ws[:, 0], p.w) and (p.ws[:, -1] != p.w).any(-1).all()  # every row mixed
    with pytest.raises(ValueError, match="mixing"):
        I.sample_latents(G, 4, mixing=0.5)
    with pytest.raises(ValueError, match="w\\+"):
        a.codes("w+")


def test_label_latents_with_h_and_with_a_callable(G):
    lat = I.sample_latents(G, 10)
    torch.manual_seed(0)
    H = AttributeRegressor(width=8).eval()
    scores = I.label_latents(G, lat, labeler=H, batch_size=4, progress=False)
    assert list(scores) == list(ATTRIBUTES) and all(v.shape == (10,) and v.dtype == torch.float32
                                                    for v in scores.values())
    images = I.render(G, lat)
    with torch.no_grad():
        torch.testing.assert_close(scores["age"], H(images)[:, 0])
    dict_scores = I.label_latents(G, lat.w, labeler=lambda im: {"b": brightness(im)}, progress=False)
    torch.testing.assert_close(dict_scores["b"], brightness(images))
    with pytest.raises(ValueError, match="unknown labeler"):
        I.label_latents(G, lat, labeler="nope")


def test_render_can_keep_faces_at_a_judge_s_size(G):
    lat = I.sample_latents(G, 5)
    full = I.render(G, lat, batch_size=2, clamp=False)
    small = I.render(G, lat, batch_size=2, clamp=False, size=G.img_resolution // 2)  # shrunk before it leaves G
    assert small.shape[-2:] == (G.img_resolution // 2,) * 2 and small.device.type == "cpu"
    torch.testing.assert_close(small, resize(full, G.img_resolution // 2))
    assert torch.equal(I.render(G, lat, size=4 * G.img_resolution), I.render(G, lat))  # never enlarged


def test_edit_grid_and_rescore_on_a_tiny_generator(G):
    lat = I.sample_latents(G, 300, seed=1)
    scores = I.label_latents(G, lat, labeler=brightness, progress=False, batch_size=100)
    b = I.train_boundary(lat, scores["score"], space="w", ratio=0.1, attribute="brightness")
    assert b.report.val_accuracy > 0.8

    w = lat.w[:3]
    grid = I.edit_grid(G, w, b, steps=(-2, 0, 2))
    assert grid.shape == (9, 3, 32, 32) and grid.min() >= -1 and grid.max() <= 1
    torch.testing.assert_close(grid[1::3], I.render(G, w))  # step 0 is the original face
    assert (brightness(grid[2::3]) > brightness(grid[0::3])).all()  # +2 brighter than -2

    def two_scores(images):
        return {"brightness": brightness(images), "red": images[:, 0].mean((1, 2))}

    def identity(a, c):
        return 1 - (a - c).abs().mean((1, 2, 3))

    flipped = dataclasses.replace(b, normal=-b.normal, offset=-b.offset, attribute="darkness")
    r = I.rescore(G, lat.w[:16], {"bright": b, "dark": flipped}, two_scores, step="std", identity=identity)
    assert r.change.shape == (2, 2) and r.attributes == ["brightness", "red"] and r.boundaries == ["bright", "dark"]
    assert r.change[0, 0] > 0 and r.change[1, 0] < 0
    torch.testing.assert_close(r.change[0], -r.change[1], atol=1e-5, rtol=1e-4)
    assert r.step == [pytest.approx(b.report.distance_std)] * 2 and r.unit == "per latent unit"
    # step="std" only picks the difference's step: the change is per latent unit either way
    numeric = I.rescore(G, lat.w[:16], {"bright": b}, two_scores, step=b.report.distance_std)
    torch.testing.assert_close(numeric.change[0], r.change[0])
    assert numeric.unit == r.unit
    assert r.identity.shape == (2,) and (r.identity < 1).all()
    assert "| bright |" in r.to_markdown()


# --- analysis ---------------------------------------------------------------------------------


def test_attribute_correlation_is_nan_safe_and_cosines_are_cosines():
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(500, generator=gen)
    s = {"a": a, "b": 2 * a + 0.5 * torch.randn(500, generator=gen), "c": torch.randn(500, generator=gen)}
    s["b"][:50] = float("nan")
    C = I.attribute_correlation(s)
    assert C.shape == (3, 3) and torch.allclose(C.diagonal(), torch.ones(3))
    ok = ~torch.isnan(s["b"])
    ref = np.corrcoef(s["a"][ok].numpy(), s["b"][ok].numpy())[0, 1]
    assert float(C[0, 1]) == pytest.approx(ref, abs=1e-5) and torch.equal(C, C.T)
    assert abs(float(C[0, 2])) < 0.15
    assert torch.isnan(I.attribute_correlation({"x": torch.ones(10), "y": torch.randn(10)})[0, 1])

    u, v = unit(torch.randn(8, generator=gen)), unit(torch.randn(8, generator=gen))
    cos = I.boundary_cosines({"u": I.Boundary(u), "v": v, "-u": -u})
    torch.testing.assert_close(cos, torch.tensor([[1, float(u @ v), -1], [float(u @ v), 1, -float(u @ v)],
                                                  [-1, -float(u @ v), 1]]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one space at a time"):
        I.boundary_cosines([u, torch.randn(4)])


# --- files ------------------------------------------------------------------------------------


def test_save_and_load_round_trip_weights_only(tmp_path, separable):
    x, score, _ = separable
    age = I.train_boundary(x, score, ratio=0.05, attribute="age")
    age.meta = {"generator": "toy", "n": 3000}
    male = I.Boundary(unit(torch.randn(16)), offset=0.5, attribute="male")
    cond = I.project_boundary(age, male)
    z_age = I.Boundary(unit(torch.randn(16)), attribute="age", space="z")
    path = I.save_boundaries(tmp_path / "b.pt", [age, male, cond, z_age], meta={"note": "test"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == I.BOUNDARIES_FORMAT and raw["meta"] == {"note": "test"}

    loaded = I.load_boundaries(path)
    assert list(loaded) == ["age", "male", "age|male"]
    got = loaded["age"]
    assert torch.equal(got.normal, age.normal) and got.offset == age.offset and got.report == age.report
    assert got.meta == age.meta and loaded["age|male"].conditions == ("male",) and loaded["age|male"].report is None
    assert list(I.load_boundaries(path, space=None)) == ["w/age", "w/male", "w/age|male", "z/age"]
    assert list(I.load_boundaries(path, space="z")) == ["age"]
    with pytest.raises(ValueError, match="no 'w\\+' boundaries"):
        I.load_boundaries(path, space="w+")
    with pytest.raises(ValueError, match="two boundaries named"):
        I.save_boundaries(tmp_path / "dup.pt", [male, male])
    hub.atomic_torch_save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a facelab boundaries file"):
        I.load_boundaries(tmp_path / "other.pt")


def test_load_boundaries_by_registry_name(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="python -m facelab.train.boundaries"):
        I.load_boundaries("nosuchworld")
    b = I.Boundary(unit(torch.randn(16)), attribute="age")
    src = I.save_boundaries(tmp_path / "b.pt", [b])
    cached = hub.cache_dir() / "boundaries_toy.pt"  # FACELAB_HOME is per test (conftest)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(src.read_bytes())
    spec = hub.WeightSpec(name="boundaries_toy", filename=cached.name, sha256=hub.sha256_file(src),
                          kind="boundaries", url="http://127.0.0.1:9/never-fetched")
    monkeypatch.setitem(hub.REGISTRY, spec.name, spec)
    assert torch.equal(I.load_boundaries("toy")["age"].normal, b.normal)


def test_boundaries_cli_end_to_end_and_resumes(G, tmp_path, capsys):
    from facelab.train import boundaries as cli

    gen_file = hub.export_generator(G, tmp_path / "tiny.pt")
    out, work = tmp_path / "boundaries_tiny.pt", tmp_path / "work"
    args = ["--generator", str(gen_file), "--n", "60", "--spaces", "w,z,w+", "--n-plus", "40", "--labeler", "random",
            "--ratio", "0.2", "--rescore-n", "4", "--chunk", "25", "--batch-size", "20", "--out", str(out),
            "--work", str(work), "--device", "cpu", "--no-progress"]
    cli.main(args)
    first = capsys.readouterr().out
    assert first.count("labelled in") == 3 + 2  # 60 W latents in 25-chunks, 40 W+ latents
    B = I.load_boundaries(out, space=None)
    assert len(B) == 3 * len(ATTRIBUTES) and B["w+/age"].dim == G.num_ws * G.w_dim
    assert B["z/male"].report.n_chosen == 12 and B["w/age"].meta["labeler"].startswith("random")
    card = out.with_suffix(".md").read_text()
    assert "| w | age | 60 | 12 |" in card and "## Re-scoring" in card and "age / male" in card
    cli.main([a if a != "0.2" else "0.25" for a in args])  # another --ratio: fitted from the cache
    assert "labelled in" not in capsys.readouterr().out
    assert I.load_boundaries(out)["age"].report.n_chosen == 15
    with pytest.raises(ValueError, match="labelled differently.*psi"):
        cli.main(args + ["--psi", "0.5"])
    # the same weights re-exported with other meta (a new file sha256) are the same generator: the cache serves
    with_file = lambda f: [str(f) if a == str(gen_file) else a for a in args]  # noqa: E731
    same = hub.export_generator(G, tmp_path / "same.pt", meta={"description": "re-exported"})
    cli.main(with_file(same))
    assert "labelled in" not in capsys.readouterr().out
    other = hub.export_generator(G, tmp_path / "other.pt")
    other_state = hub.load_file(other)
    state = other_state["state_dict"]
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1  # other weights, the same architecture
    hub.atomic_torch_save(other_state, other)
    with pytest.raises(ValueError, match="labelled differently.*weights_sha256"):
        cli.main(with_file(other))
    # chunks cached before weight digests are compared by the file's sha256, as they were
    for f in work.glob("scores_*.pt"):
        cached = hub.load_file(f)
        del cached["config"]["weights_sha256"]
        hub.atomic_torch_save(cached, f)
    cli.main(args)
    assert "labelled in" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="labelled differently.*'generator'"):
        cli.main(with_file(same))


def test_boundaries_card_quotes_paths_inside_the_checkout_relative_to_it(tmp_path, monkeypatch):
    from facelab.train.boundaries import quoted_command

    monkeypatch.chdir(tmp_path)
    inside, outside = tmp_path / "facelab" / "weights" / "b.pt", Path("/elsewhere/work")
    line = quoted_command(["--out", str(inside), "--work", str(outside), "--n", "10"])
    assert line == "python -m facelab.train.boundaries --out facelab/weights/b.pt --work /elsewhere/work --n 10"


def test_rescore_markdown_escapes_pipes_in_boundary_names():
    import re

    r = I.Rescore(change=torch.zeros(1, 2), boundaries=["yaw|roll"], attributes=["yaw", "roll"], step=[1.0], unit="std")
    header, _, row = r.to_markdown().splitlines()
    cells = lambda line: len(re.split(r"(?<!\\)\|", line))  # noqa: E731
    assert cells(row) == cells(header) and "yaw\\|roll" in row


def test_rescore_keeps_per_face_changes_and_edits_z_codes_through_the_mapping(G):
    lat = I.sample_latents(G, 200, seed=2)
    scores = I.label_latents(G, lat, labeler=brightness, progress=False, batch_size=100)
    bw = I.train_boundary(lat, scores["score"], space="w", ratio=0.1, attribute="brightness")
    bz = I.train_boundary(lat, scores["score"], space="z", ratio=0.1, attribute="brightness")
    r = I.rescore(G, lat.w[:8], {"w": bw}, brightness, step="std", identity=lambda a, c: (a - c).abs().mean((1, 2, 3)))
    assert r.per_sample.shape == (1, 8, 1) and r.per_sample_identity.shape == (1, 8)
    torch.testing.assert_close(r.change, r.per_sample.nanmean(1))
    rz = I.rescore(G, lat.z[:8], {"z": bz}, brightness, step="std", space="z")
    assert rz.per_sample.shape == (1, 8, 1) and rz.change[0, 0] > 0  # a Z edit along the Z normal brightens
    with pytest.raises(ValueError, match=r"space must be one of \('z', 'w', 'w\+'\), got 'q'"):
        I.rescore(G, lat.z[:8], {"z": bz}, brightness, space="q")
    with pytest.raises(ValueError, match="boundary 'z' lives in 'z' but rescore was given space='w'"):
        I.rescore(G, lat.w[:8], {"z": bz}, brightness)  # a Z normal cannot edit W codes, whatever their size
# ---------------------------------------------------------------------------------------------
# SeFa / GANSpace directions (#15)


def test_sefa_directions_solve_the_eigen_equation_orthonormal_sorted_and_signed(G):
    dirs = I.sefa_directions(G, k=4)
    V, lam = dirs.vectors.double(), dirs.values.double()
    assert V.shape == (4, G.w_dim) and dirs.method == "sefa"
    torch.testing.assert_close(V @ V.T, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)
    A = torch.cat([layer.affine.weight.detach().double() for layer in G.synthesis.layers()])
    A = A / A.norm(dim=1, keepdim=True)
    torch.testing.assert_close(V @ (A.T @ A), lam[:, None] * V, atol=1e-4, rtol=1e-4)
    assert (lam[:-1] >= lam[1:]).all()
    assert lam[0] >= torch.linalg.eigvalsh(A.T @ A).max() - 1e-4  # the top one, not any one
    top = V.gather(1, V.abs().argmax(1, keepdim=True))
    assert (top > 0).all()
    first = I.sefa_directions(G, layers=[0], k=4)
    assert not torch.allclose(first.vectors.abs(), dirs.vectors.abs(), atol=1e-3)
    with pytest.raises(ValueError, match="layers"):
        I.sefa_directions(G, layers=[99])
    with pytest.raises(ValueError, match="k must"):
        I.sefa_directions(G, k=G.w_dim + 1)


def test_ganspace_directions_are_the_principal_axes_of_sampled_w(G):
    dirs = I.ganspace_directions(G, n=400, k=3, seed=1)
    V = dirs.vectors.double()
    torch.testing.assert_close(V @ V.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    w = I.sample_latents(G, 400, seed=1).w.double()
    proj_var = (w @ V.T).var(0)
    torch.testing.assert_close(proj_var.float(), dirs.values, rtol=1e-4, atol=1e-6)
    assert (dirs.values[:-1] >= dirs.values[1:]).all()
    total = w.var(0).sum()
    torch.testing.assert_close(dirs.explained.double(), proj_var / total, rtol=1e-4, atol=1e-6)
    rand = unit(torch.randn(G.w_dim, generator=torch.Generator().manual_seed(0)).double())
    assert (w @ rand).var() < proj_var[0]
    with pytest.raises(ValueError, match="n must"):
        I.ganspace_directions(G, n=1)


def test_direction_cosines_against_boundaries(G):
    dirs = I.sefa_directions(G, k=3)
    bounds = {"a": I.Boundary(normal=-dirs.vectors[1]), "b": dirs.vectors[0]}
    cos = I.direction_cosines(dirs, bounds)
    assert cos.shape == (3, 2)
    torch.testing.assert_close(cos[:, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(cos[:, 1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="dimensions"):
        I.direction_cosines(dirs, [torch.ones(5)])


def test_what_directions_edit_flips_with_the_direction_and_brackets_its_mean(G):
    dirs = I.sefa_directions(G, k=2)
    fwd = I.what_directions_edit(G, dirs, n=6, labeler=brightness)
    back = I.what_directions_edit(G, -dirs.vectors, n=6, labeler=brightness)
    assert len(fwd) == 2 and set(fwd[0]) == set(back[0])
    for f, b in zip(fwd, back):
        for name, e in f.items():
            assert e.n == 6 and e.lo <= e.mean <= e.hi and e.mean != 0
            assert math.isclose(b[name].mean, -e.mean, rel_tol=1e-3, abs_tol=1e-6)
    with pytest.raises(ValueError, match="step"):
        I.what_directions_edit(G, dirs, n=4, step=0, labeler=brightness)


class _Brightness(torch.nn.Module):
    """A stand-in for H: one attribute, the mean brightness of the image."""

    def index(self, name):
        assert name == "bright"
        return 0

    def forward(self, images):
        return images.mean((1, 2, 3))[:, None]


def test_attribute_slope_is_signed_and_per_latent_unit(G):
    torch.manual_seed(0)
    normal = torch.nn.functional.normalize(torch.randn(G.w_dim), dim=0)
    b = I.Boundary(normal, attribute="bright", space="w")
    H = _Brightness()
    up = I.attribute_slope(G, b, H, n=16)
    down = I.attribute_slope(G, I.Boundary(-normal, attribute="bright", space="w"), H, n=16)
    assert up * down < 0  # the other side of the hyperplane moves the attribute the other way
    assert abs(up) > 1e-4
    with pytest.raises(ValueError, match="measures W boundaries"):
        I.attribute_slope(G, I.Boundary(torch.nn.functional.normalize(torch.randn(G.z_dim), dim=0), attribute="bright", space="z"), H)


class _Elsewhere(_Brightness):
    """H on another device than G (here "meta", standing in for a GPU): records where its images arrive."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1, device="meta"))
        self.seen = set()

    def forward(self, images):
        self.seen.add(images.device.type)
        return torch.zeros(len(images), 1)


def test_attribute_slope_feeds_H_on_its_own_device(G):
    H = _Elsewhere()
    b = I.Boundary(torch.nn.functional.normalize(torch.randn(G.w_dim), dim=0), attribute="bright", space="w")
    assert I.attribute_slope(G, b, H, n=4) == 0.0 and H.seen == {"meta"}


# --- activation patterns (Haufe et al. 2014) ---------------------------------------------------


def _distractor_codes(n: int = 4000, seed: int = 0):
    """Codes ``x = a p + d q``: the attribute ``a`` enters along ``p``; a strong distractor ``d``
    (independent of ``a``) along ``q``, which overlaps ``p``, so the best filter leans away from ``p``."""
    rng = np.random.default_rng(seed)
    D = 6
    p = np.eye(D)[0]
    q = np.zeros(D); q[:2] = 1 / math.sqrt(2)
    a, d = rng.standard_normal(n), 3 * rng.standard_normal(n)
    x = a[:, None] * p + d[:, None] * q + 0.05 * rng.standard_normal((n, D))
    return x, a, p


def test_activation_pattern_recovers_the_forward_model_where_the_normal_leans_away():
    x, a, p = _distractor_codes()
    b = I.train_boundary(x, a, ratio=0.1, attribute="age")
    pat = I.activation_pattern(b, x, scores=a)
    n, v = b.normal.double().numpy(), pat.normal.double().numpy()
    assert abs(n @ p) < 0.85            # the filter cancels the distractor: it is not p
    assert v @ p > 0.99                 # the pattern is p (Haufe's forward model)
    sn = np.cov(x, rowvar=False) @ n
    torch.testing.assert_close(pat.normal.double(), torch.from_numpy(sn / np.linalg.norm(sn)), atol=1e-6, rtol=0)
    assert pat.attribute == "age" and pat.space == "w" and pat.meta["direction"] == "pattern"
    # its report is measured along the pattern; it is not a classifier, so no accuracies
    dist = x @ v + pat.offset
    assert math.isclose(pat.report.distance_std, float(dist.std()), rel_tol=1e-5)
    assert math.isclose(pat.report.distance_mean, float(dist.mean()), rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(pat.report.score_correlation, float(np.corrcoef(dist, a)[0, 1]), rel_tol=1e-5)
    assert math.isnan(pat.report.val_accuracy) and math.isnan(pat.report.all_accuracy)
    assert pat.report.n_chosen == b.report.n_chosen  # how the SVM was fitted is kept
    # its hyperplane passes through the SVM hyperplane's point nearest the codes' mean
    mu = x.mean(0)
    x0 = mu - (mu @ n + b.offset) * n
    assert abs(x0 @ v + pat.offset) < 1e-6 and abs(x0 @ n + b.offset) < 1e-6


def test_activation_pattern_of_isotropic_codes_is_the_normal():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(50_000, 8, generator=gen)
    b = I.Boundary(unit(torch.randn(8, generator=gen)), offset=0.3, attribute="smile", space="z")
    pat = I.activation_pattern(b, z)
    assert float(pat.normal @ b.normal) > 0.995
    assert pat.report is None and pat.space == "z"  # a boundary without a report gets none


def test_activation_pattern_refuses_what_it_cannot_measure():
    gen = torch.Generator().manual_seed(6)
    b = I.Boundary(unit(torch.randn(8, generator=gen)), attribute="age")
    c = I.Boundary(unit(torch.randn(8, generator=gen)), attribute="male")
    with pytest.raises(ValueError, match="project_boundary"):
        I.activation_pattern(I.project_boundary(b, c), torch.randn(10, 8))
    with pytest.raises(ValueError, match="dimension 4, the boundary 8"):
        I.activation_pattern(b, torch.randn(10, 4))
    with pytest.raises(ValueError, match="do not vary"):
        I.activation_pattern(b, torch.ones(10, 8))
    with pytest.raises(ValueError, match=r"scores must be \[N\]"):
        I.activation_pattern(b, torch.randn(10, 8), scores=torch.randn(9))
    with pytest.raises(TypeError, match="needs a Boundary"):
        I.activation_pattern(b.normal, torch.randn(10, 8))


def test_a_worlds_patterns_are_its_boundaries_activation_patterns_taken_once():
    from facelab.worlds import load_world
    world = load_world("world64", device="cpu")
    codes = I.sample_latents(world.G, 2000, space="w", seed=0).w
    got = I.world_patterns(world, "w", n=2000)
    assert got.keys() == world.boundaries("w").keys()
    want = I.activation_pattern(world.boundaries("w")["smile"], codes)
    assert torch.equal(got["smile"].normal, want.normal) and got["smile"].meta["direction"] == "pattern"
    assert I.world_patterns(world, "w", n=2000)["age"] is got["age"]  # computed once
    assert I.world_patterns(world, "z", n=2000)["age"].space == "z"
    with pytest.raises(ValueError, match="'w' or 'z'.*activation_pattern"):
        I.world_patterns(world, "w+")
