"""H, the attribute regressor: shapes, units, loading, and that its training recipe learns a label."""
from __future__ import annotations

import copy
import functools
import json
import math
import shutil

import numpy as np
import pytest
import torch

from facelab import claims as C
from facelab import hub
from facelab.hub import load_regressor
from facelab.nets.regressor import MIRROR_SIGN, AttributeRegressor
from facelab.nets.regressor import OUTPUTS as ATTRIBUTES
from facelab.train import regressor as tr


def test_output_has_one_column_per_attribute_in_natural_units():
    mean, std = torch.arange(7.0), torch.full((7,), 2.0)
    H = AttributeRegressor(mean=mean, std=std).eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    y = H(x)
    assert y.shape == (3, len(ATTRIBUTES))
    assert torch.allclose(y, H.normalised(x) * 2 + mean)
    assert set(H.predict(x)) == set(ATTRIBUTES)
    assert H(torch.rand(2, 3, 128, 128)).shape == (2, 7)  # other sizes are resized
    with pytest.raises(ValueError, match="expects images \\[N, 3, H, W\\]"):
        H(torch.rand(2, 64, 64))
    with pytest.raises(KeyError, match="no attribute 'eyeglasses'"):
        H.index("eyeglasses")


def test_mirroring_flips_exactly_yaw_and_roll():
    flipped = {a for a, s in zip(ATTRIBUTES, MIRROR_SIGN.tolist()) if s < 0}
    assert flipped == {"yaw", "roll"}


def test_loader_refuses_other_files(tmp_path):
    hub.atomic_torch_save({"format": "facelab.generator/1"}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="not a facelab attribute regressor"):
        load_regressor(tmp_path / "g.pt")


def _fake_chunks(folder, n=600, seed=0):
    """Chunks whose 'age' is the face's mean brightness and whose 'male' is left-right asymmetry."""
    g = np.random.default_rng(seed)
    for i in range(n // 600):
        base = g.integers(0, 256, (600, 3, 8, 8)).astype(np.float32)
        img = np.kron(base, np.ones((1, 1, 8, 8), np.float32)).astype(np.uint8)  # 64 px, blocky
        x = img.astype(np.float32) / 127.5 - 1
        labels = {a: g.normal(size=600).astype(np.float32) for a in ATTRIBUTES}
        labels["age"] = 30 + 20 * x.mean((1, 2, 3))
        labels["face_conf"] = np.ones(600, np.float32)
        labels["smile"][:50] = np.nan  # unlabelled rows are skipped by the loss
        np.savez(folder / f"chunk{i:04d}.npz", images=img, psi=np.ones(600, np.float32), **labels)


FIT = dict(epochs=3, val=150, batch=32, lr=3e-3, ship=False, ceiling=False)  # learns the fake age


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Fake chunks and an H fitted on them by ``FIT``, made once for the module: (folder, report)."""
    folder = tmp_path_factory.mktemp("fitted")
    _fake_chunks(folder)
    with pytest.MonkeyPatch.context() as mp:  # as conftest's function-scoped fixtures would
        mp.setenv("FACELAB_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setattr(tr, "cpu_speed", functools.partial(tr.cpu_speed, batch=4, repeats=2))
        return folder, tr.fit(folder, **FIT)


@pytest.fixture
def trained(fitted, tmp_path):
    """A copy of ``fitted`` for one test to change: (folder with the chunks and attribute_regressor.pt, report)."""
    folder, report = fitted
    return shutil.copytree(folder, tmp_path / "fitted"), copy.deepcopy(report)


def test_fit_learns_a_label_and_reports_held_out_agreement(trained):
    tmp_path, report = trained
    assert report["val"]["age"]["r"] > 0.8         # brightness is learnable
    assert abs(report["val"]["yaw"]["r"]) < 0.3    # pure noise is not
    assert report["val"]["smile"]["n"] <= 150 and "accuracy" in report["val"]["male"]
    assert report["train"]["age"]["r"] > 0.8 and report["train"]["age"]["n"] == 150  # the underfitting check
    assert "r on training faces" in tr.card_markdown(report)
    assert report["cpu"]["forward_ms_per_image"] > 0 and report["cpu"]["forward_backward_ms_per_image"] > 0
    assert "batch 4): " in tr.card_markdown(report)  # as timed (the tests time a batch of 4, conftest)
    H = load_regressor(tmp_path / "attribute_regressor.pt")  # the run's file loads
    assert H.names == tuple(ATTRIBUTES)
    # stored at half the size: kernels and matrices float16, the rest float32, integer counters as they were
    state = torch.load(tmp_path / "attribute_regressor.pt", weights_only=True)["state_dict"]
    assert {str(v.dtype) for k, v in state.items() if v.ndim >= 2} == {"torch.float16"}
    assert {str(v.dtype) for k, v in state.items() if v.ndim < 2} <= {"torch.float32", "torch.int64"}
    assert all(p.dtype == torch.float32 for p in H.parameters())  # computed in float32
    again = tmp_path / "again.pt"
    tr.save(H, report, again, ship=False)  # rounding rounded weights changes nothing
    assert all(torch.equal(load_regressor(again).state_dict()[k], v) for k, v in H.state_dict().items())


def test_fit_trains_an_H_of_the_asked_width_and_a_warm_start_keeps_its_own(tmp_path, monkeypatch):
    _fake_chunks(tmp_path)
    calls = []  # the ceiling's teacher labels the held-out faces on the device the fit is given
    monkeypatch.setattr(tr, "mirror_ceiling", lambda x, device=None: calls.append((len(x), device)) or {"age": {}})
    report = tr.fit(tmp_path, epochs=1, val=150, batch=32, ship=False, width=8, device="cpu")
    assert calls == [(150, "cpu")] and report["ceiling"] == {"age": {}}
    H = load_regressor(tmp_path / "attribute_regressor.pt")
    assert H.width == report["width"] == 8
    assert sum(p.numel() for p in H.parameters()) < sum(p.numel() for p in AttributeRegressor().parameters()) / 2
    start = tmp_path / "narrow.pt"
    (tmp_path / "attribute_regressor.pt").rename(start)
    tr.fit(tmp_path, epochs=1, val=150, batch=32, ship=False, ceiling=False, init=start, width=16)
    assert load_regressor(tmp_path / "attribute_regressor.pt").width == 8


def test_loss_weights_scale_one_attribute_and_bad_ones_are_refused():
    pred, target = torch.zeros(2, 7), torch.ones(2, 7)
    target[0, 2] = float("nan")  # no smile label for the first face
    assert tr.masked_mse(pred, target) == 1.0 and tr.loss_weights(None) is None
    w = tr.loss_weights(tr.parse_weights(["age=3"]))
    assert w.tolist() == [3.0, 1, 1, 1, 1, 1, 1]
    assert math.isclose(float(tr.masked_mse(pred, target, w)), (13 + 2 * 2) / 13, rel_tol=1e-6)  # age counts 3
    with pytest.raises(ValueError, match="no H output named eyeglasses; weight one of age"):
        tr.parse_weights(["eyeglasses=2"])
    with pytest.raises(ValueError, match="write ATTRIBUTE=WEIGHT"):
        tr.parse_weights(["age:3"])
    with pytest.raises(ValueError, match="must be positive"):
        tr.parse_weights(["age=0"])


def test_a_weighted_fit_trains_differently_and_says_so(tmp_path):
    _fake_chunks(tmp_path)
    small = dict(epochs=1, val=150, batch=32, ship=False, ceiling=False, width=8)
    plain = tr.fit(tmp_path, **small)
    plain_H = load_regressor(tmp_path / "attribute_regressor.pt").state_dict()
    report = tr.fit(tmp_path, weights={"age": 3.0}, **small)  # same seed, same faces
    weighted_H = load_regressor(tmp_path / "attribute_regressor.pt").state_dict()
    assert report["runs"][-1]["loss_weights"] == {"age": 3.0} and "loss_weights" not in plain["runs"][-1]
    assert any(not torch.equal(weighted_H[k], v) for k, v in plain_H.items())
    assert "(loss weights age 3, the rest 1)" in tr.card_markdown(report)
    assert "loss weights" not in tr.card_markdown(plain)
    with pytest.raises(SystemExit, match="no H output named agee"):  # the build refuses it before any stage
        from facelab.train import build
        build.main(["world64", "--work", str(tmp_path / "w"), "--h-weight", "agee=2"])


def test_card_reevaluates_a_candidate_and_measures_a_missing_ceiling_once(trained, monkeypatch):
    tmp_path, _ = trained
    candidate = tmp_path / "candidate.pt"
    (tmp_path / "attribute_regressor.pt").rename(candidate)
    calls = []
    monkeypatch.setattr(tr, "mirror_ceiling",
                        lambda x, device=None: calls.append((len(x), device)) or {"age": {"ceiling": 0.5}})
    shipped = (hub.PACKAGE_WEIGHTS / "attribute_regressor.pt").read_bytes()
    report = tr.recard(tmp_path, val=150, regressor=candidate, ship=False, device="cpu")
    # measured on the held-out faces, the teacher on the device given
    assert calls == [(150, "cpu")] and report["ceiling"] == {"age": {"ceiling": 0.5}}
    assert report["val"]["age"]["n"] == 150 and report["train"]["age"]["n"] == 150
    assert load_regressor(candidate).meta["ceiling"] == report["ceiling"]  # rewritten in place
    again = tr.recard(tmp_path, val=150, regressor=candidate, ship=False)
    assert len(calls) == 1 and again["val"]["age"] == report["val"]["age"]  # the stored ceiling is kept, H unchanged
    assert (hub.PACKAGE_WEIGHTS / "attribute_regressor.pt").read_bytes() == shipped  # not shipped


def test_test_judges_an_H_on_a_fresh_set_and_measures_its_ceiling_once(trained, monkeypatch):
    train, _ = trained
    fresh = train.parent / "fresh"
    fresh.mkdir()
    _fake_chunks(fresh, seed=1)
    candidate = train / "attribute_regressor.pt"
    calls = []
    _, labels = tr.load_chunks(fresh)

    def single_crops(x, device=None):  # the teacher's two single crops: its labels, each with its own noise
        calls.append((len(x), device))
        g = torch.Generator().manual_seed(len(calls))
        noisy = lambda: labels.double() + 0.5 * labels.double().nan_to_num().std(0) * torch.randn(  # noqa: E731
            labels.shape, generator=g, dtype=torch.float64)
        return noisy(), noisy()

    monkeypatch.setattr(tr, "mirror_labels", single_crops)
    shipped = (hub.PACKAGE_WEIGHTS / "attribute_regressor.pt").read_bytes()
    report = tr.test(fresh, regressor=candidate, device="cpu")
    assert calls == [(600, "cpu")] and report["test"]["faces"] == 600 and report["test"]["folder"] == "fresh"
    assert report["test"]["agreement"]["age"]["r"] > 0.8  # brightness, learnt on other faces
    assert report["val"]["age"]["n"] == 150  # the fit's own numbers are kept
    ceiling, ratio = report["test"]["ceiling"]["age"], report["test"]["ratio"]["age"]
    assert 0.7 < ceiling["mirror_r"] < 0.9 and ceiling["n"] == 600  # 1 / (1 + 0.5^2) in expectation
    # H's r / the ceiling, with an interval over faces that carries the ceiling's noise too
    assert ratio["value"] == pytest.approx(report["test"]["agreement"]["age"]["r"] / math.sqrt(ceiling["mirror_r"]),
                                           abs=2e-3)
    assert ratio["low"] < ratio["value"] < ratio["high"] and ratio["n"] == 600
    assert set(report["test"]["ratio"]) == set(tr.CURVE) and report["test"]["ratio"]["smile"]["n"] == 550
    stored = load_regressor(candidate).meta["test"]  # written into the candidate's file
    assert stored["agreement"]["age"] == report["test"]["agreement"]["age"]
    assert stored["ceiling"] == report["test"]["ceiling"] and stored["ratio"] == report["test"]["ratio"]
    assert (hub.PACKAGE_WEIGHTS / "attribute_regressor.pt").read_bytes() == shipped  # and nothing shipped
    assert tr.test(fresh, regressor=candidate)["test"]["ceiling"] == report["test"]["ceiling"]
    assert len(calls) == 1  # the teacher's crops depend on the faces only: kept in mirror-labels.pt
    cache = fresh / "mirror-labels.pt"
    kept = torch.load(cache, weights_only=True)
    torch.save({k: v[:100] for k, v in kept.items()}, cache)  # the cache of a smaller test set, since grown
    assert tr.test(fresh, regressor=candidate)["test"]["ceiling"]["age"]["n"] == 600 and len(calls) == 2  # relabelled
    text = tr.card_markdown(report)
    assert "On a fresh test set** of 600 world faces (`fresh`" in text and "| age | 600 |" in text
    assert f"[{ratio['low']:.3f}, {ratio['high']:.3f}]" in text
    # a test set must be of H's world and of another seed than its training faces (from the folders' stamps)
    stamp = {"generator": "g", "generator_sha256": "a" * 64, "seed": 0, "psi_min": 0.5}
    tr.stamp_labels(train, stamp)
    tr.fit(train, epochs=1, val=150, batch=32, ship=False, ceiling=False)
    assert load_regressor(candidate).meta["drawn"] == stamp
    tr.stamp_labels(fresh, {**stamp, "generator_sha256": "b" * 64, "seed": 1})
    with pytest.raises(ValueError, match="trained on faces of generator aaaaaaaaaaaa.*label a test set of H's own"):
        tr.test(fresh, regressor=candidate)
    (fresh / "labels.json").unlink()
    tr.stamp_labels(fresh, stamp)
    with pytest.raises(ValueError, match="drawn with seed 0, as H's training faces were"):
        tr.test(fresh, regressor=candidate)
    (fresh / "labels.json").unlink()
    tr.stamp_labels(fresh, {**stamp, "seed": 1})
    assert tr.test(fresh, regressor=candidate)["test"]["drawn"]["seed"] == 1


def test_compare_finds_the_closer_imitator_by_a_paired_interval(trained, capsys):
    tmp_path, _ = trained
    good = tmp_path / "good.pt"
    (tmp_path / "attribute_regressor.pt").rename(good)
    tr.fit(tmp_path, epochs=1, val=150, batch=32, lr=1e-12, ship=False, ceiling=False)  # barely trained
    rows = tr.compare(tmp_path, good, baseline=tmp_path / "attribute_regressor.pt", val=150)
    age = rows[list(ATTRIBUTES).index("age")]
    assert age.verdict == C.HOLDS and age.n == 150 and age.measured.low > 0
    same = tr.compare(tmp_path, good, baseline=good, val=150)[list(ATTRIBUTES).index("age")]
    assert same.verdict == C.INCONCLUSIVE and same.measured.value == 0  # paired: no gain, no spread
    tr.main(["compare", str(good), "--baseline", str(good), "--out", str(tmp_path), "--val", "150"])
    assert "the candidate's r with the teacher is higher (age)" in capsys.readouterr().out
    twice = tr.compare(tmp_path, [good, good], baseline=good, val=150)[list(ATTRIBUTES).index("age")]
    assert twice.measured.value == 0  # an average of one H with itself is that H
    tr.main(["compare", str(good), str(tmp_path / "attribute_regressor.pt"), "--mirror", "--out", str(tmp_path),
             "--val", "150"])
    assert "r 0." in capsys.readouterr().out  # each row says both r


def test_a_mirror_averaged_h_sees_a_symmetric_face_as_frontal(trained):
    tmp_path, _ = trained
    H = tmp_path / "attribute_regressor.pt"
    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    sym = torch.cat([x[..., :32], x[..., :32].flip(3)], dim=3)  # mirror-symmetric faces
    plain = tr.predict(load_regressor(H), sym)
    both = tr.predict_averaged([H], sym, mirror=True)
    yaw, roll = list(ATTRIBUTES).index("yaw"), list(ATTRIBUTES).index("roll")
    assert plain[:, yaw].abs().max() > 0 and both[:, [yaw, roll]].abs().max() < 1e-5  # the sign flips cancel
    keep = [j for j in range(len(ATTRIBUTES)) if j not in (yaw, roll)]
    assert torch.allclose(both[:, keep], plain[:, keep], atol=1e-5)  # the rest is what H saw once


def test_an_interrupted_fit_continues_from_its_last_epoch_exactly(fitted, tmp_path, monkeypatch):
    whole, report = fitted  # fitted by FIT in one go
    stopped = tmp_path
    _fake_chunks(stopped)
    kw = FIT
    assert not (whole / tr.FIT_STATE).exists()  # gone when the fit ends
    real, calls = tr.held_out_r, []

    def stop_in_epoch_2(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(tr, "held_out_r", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(stopped, **kw)
    assert torch.load(stopped / tr.FIT_STATE, weights_only=True)["epoch"] == 1
    with pytest.raises(ValueError, match="interrupted fit with another epochs 3.*delete the file"):
        tr.fit(stopped, **{**kw, "epochs": 4})
    resumed = []
    monkeypatch.setattr(tr, "held_out_r", lambda *a: resumed.append(1) or real(*a))
    again = tr.fit(stopped, **kw)
    assert len(resumed) == 2  # epochs 2 and 3 only: a fit that started over would run all three again
    assert again["curve"] == report["curve"] and again["epochs"] == 3  # the same three epochs
    a, b = (load_regressor(f / "attribute_regressor.pt").state_dict() for f in (whole, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise: the batches, flips and dropout all resumed


def test_warm_start_continues_the_same_H_and_counts_all_its_epochs(tmp_path):
    _fake_chunks(tmp_path)
    first = tr.fit(tmp_path, epochs=1, val=150, batch=32, lr=3e-3, ship=False, ceiling=False)
    start = tmp_path / "first.pt"
    (tmp_path / "attribute_regressor.pt").rename(start)
    H0 = load_regressor(start)
    report = tr.fit(tmp_path, epochs=2, val=150, batch=32, lr=1e-3, ship=False, ceiling=False, init=start)
    assert report["epochs"] == 3 and [r["epochs"] for r in report["runs"]] == [1, 2]
    assert [r["lr"] for r in report["runs"]] == [3e-3, 1e-3]
    assert [c["epoch"] for c in report["curve"]] == [1, 2, 3]  # one held-out curve across both runs
    assert report["curve"][0] == first["curve"][0]
    H = load_regressor(tmp_path / "attribute_regressor.pt")
    assert torch.equal(H.mean, H0.mean) and torch.equal(H.std, H0.std)  # the same normalisation
    tr.fit(tmp_path, epochs=1, val=150, batch=32, lr=1e-12, ship=False, ceiling=False, init=start)
    H = load_regressor(tmp_path / "attribute_regressor.pt")  # a negligible step: the weights it started from
    weights = [k for k, v in H0.state_dict().items() if v.is_floating_point() and "running" not in k]
    assert all(torch.allclose(H.state_dict()[k], H0.state_dict()[k], atol=1e-6) for k in weights)
    assert "3 epochs — 1 at peak lr 0.003, then 2 more at 0.001 warm-started" in tr.card_markdown(report)
    assert "Held-out r after each epoch" in tr.card_markdown(report)
    with pytest.raises(ValueError, match="trained on 450 faces with 150 held out.*from scratch"):
        tr.fit(tmp_path, epochs=1, val=100, ship=False, ceiling=False, init=start)  # another split


def test_card_section_is_replaced_not_duplicated(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# H\n\nintro\n")
    report = {"val": {a: {"n": 10, "r": 0.5, "mae": 1.0, "teacher_std": 2.0, "accuracy": 0.9, "majority": 0.6} for a in ATTRIBUTES},
              "val_faces": 10, "train_faces": 90, "epochs": 1, "train_minutes": 0.1,
              "cpu": {"threads": 1, "forward_ms_per_image": 1.0, "forward_backward_ms_per_image": 2.0}}
    tr.update_card(card, report)
    tr.update_card(card, report)
    text = card.read_text()
    assert text.startswith("# H\n\nintro") and text.count("metrics:start") == 1 and "| age | years | 10 |" in text
    report["ceiling"] = {"age": {"n": 10, "mirror_r": 0.64, "ceiling": 0.8}}
    tr.update_card(card, report)
    # r / ceiling, then the two-crop ceiling √(2·0.64 / 1.64) and r against it
    assert "| age | years | 10 | 0.500 | 0.800 | 0.625 | 0.883 | 0.566 |" in card.read_text()


def test_the_two_crop_ceiling_is_stricter_and_only_for_mirror_averaged_labels():
    for m in (0.3, 0.623, 0.9):
        assert math.sqrt(m) < tr.two_crop_ceiling(m) < 1
    assert tr.two_crop_ceiling(1.0) == 1.0 and tr.two_crop_ceiling(-0.1) == 0.0
    assert {"age", "male", "smile"} <= tr.MIRROR_AVERAGED and not {"yaw", "roll", "mouth_width"} & tr.MIRROR_AVERAGED


def test_the_mirror_ceiling_measures_the_teacher_against_itself():
    """World faces and their mirrors: yaw flips sign and MTCNN measures it well (high r after the
    sign); a label whose sign handling were wrong would come out strongly negative."""
    pytest.importorskip("onnxruntime")
    G = hub.load_generator("world64", device="cpu")
    z = torch.randn(48, G.z_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        faces = G(z, noise_mode="const").clamp(-1, 1)
    u8 = ((faces + 1) * 127.5).round().to(torch.uint8)
    rows = tr.mirror_ceiling(u8)
    assert set(rows) == set(ATTRIBUTES) - {"face_conf"}
    assert rows["yaw"]["mirror_r"] > 0.8 and rows["roll"]["mirror_r"] > 0.3
    for row in rows.values():
        assert 30 <= row["n"] <= 48 and -1 <= row["mirror_r"] <= 1 and 0 <= row["ceiling"] <= 1


shipped = pytest.mark.skipif("attribute_regressor" not in hub.REGISTRY, reason="H not shipped yet")


@shipped
def test_shipped_H_agrees_with_the_teacher_on_new_world_faces():
    """World faces from latents H never saw, labelled by the teacher and by H (card: r 0.71 age, 0.99 yaw)."""
    pytest.importorskip("onnxruntime")
    from facelab.nets.attributes import label_images

    G = hub.load_generator("world64", device="cpu")
    z = torch.randn(96, G.z_dim, generator=torch.Generator().manual_seed(424242))
    with torch.no_grad():
        faces = G(z, noise_mode="const").clamp(-1, 1)
    teacher = label_images(faces, attributes=["age", "yaw"], progress=False)
    pred = load_regressor(device="cpu").predict(faces)
    for a, floor in (("age", 0.3), ("yaw", 0.8)):
        ok = ~torch.isnan(teacher[a])
        r = torch.corrcoef(torch.stack([pred[a][ok], teacher[a][ok]]))[0, 1]
        assert r > floor, (a, float(r))


def test_label_renders_on_the_device_and_stores_faces_at_H_input_size(tmp_path, monkeypatch):
    """A 128 px world: labelled at 128 px (the teacher sees full resolution), stored at 64 px as H
    resizes; the render batch follows the pixel count; chunks resume and reproduce."""
    from facelab.hub import export_generator
    from facelab.nets import attributes
    from facelab.nets.stylegan2 import Generator, StyleGAN2Config

    G = Generator(StyleGAN2Config(img_resolution=128, z_dim=16, w_dim=16, mapping_layers=1, channel_base=256,
                                  channel_max=16))
    path = export_generator(G, tmp_path / "g128.pt", meta={})
    seen, devices = [], set()

    def fake_labels(images, **kw):
        seen.append(tuple(images.shape))
        devices.update({images.device, torch.device(kw["device"])})
        n = images.shape[0]
        return {"face_conf": torch.ones(n), **{a: images.mean((1, 2, 3)) for a in ATTRIBUTES if a != "face_conf"}}

    monkeypatch.setattr(attributes, "label_images", fake_labels)
    monkeypatch.setattr(tr, "CHUNK", 30)
    assert tr.render_batch(128, torch.device("cpu")) == 25 and tr.render_batch(64, torch.device("cpu")) == 30
    monkeypatch.setenv("FACELAB_DEVICE", "meta")  # what get_device() would give: never asked for here
    tr.label(tmp_path / "a", 60, generator=str(path), device="cpu")
    assert seen == [(25, 3, 128, 128), (5, 3, 128, 128)] * 2
    assert devices == {torch.device("cpu")}  # rendered and labelled on the device asked for
    images, labels = tr.load_chunks(tmp_path / "a")
    assert images.shape == (60, 3, 64, 64) and images.dtype == torch.uint8 and labels.shape == (60, len(ATTRIBUTES))
    tr.label(tmp_path / "b", 30, generator=str(path), device="cpu")  # the same seed: the same first chunk
    again, _ = tr.load_chunks(tmp_path / "b")
    assert torch.equal(again, images[:30])
    tr.label(tmp_path / "a", 60, generator=str(path), device="cpu")  # done chunks are kept, not redone
    assert len(seen) == 6
    stamp = json.loads((tmp_path / "a" / "labels.json").read_text())  # what the faces were drawn from
    assert stamp["seed"] == 0 and stamp["generator_sha256"] == hub.sha256_file(path) and stamp["psi_min"] == 0.5
    assert stamp["weights_sha256"] == hub.weights_sha256(G)
    with pytest.raises(ValueError, match="drawn with another seed 0; label into a new folder"):
        tr.label(tmp_path / "a", 90, generator=str(path), device="cpu", seed=1)  # a test set must not join them
    # the same weights re-exported with other meta (a new file sha256) are the same generator: labelling goes on
    again_path = export_generator(G, tmp_path / "same.pt", meta={"description": "re-exported"})
    assert hub.sha256_file(again_path) != hub.sha256_file(path)
    tr.label(tmp_path / "a", 90, generator=str(again_path), device="cpu")
    assert len(seen) == 8 and len(tr.load_chunks(tmp_path / "a")[0]) == 90
    tr.label(tmp_path / "a", 30, generator=str(again_path), device="cpu")  # a smaller rebuild in the same folder
    assert len(seen) == 8 and torch.equal(tr.load_chunks(tmp_path / "a")[0], images[:30])  # not all three chunks
    G.mapping.w_avg.add_(1)
    other = export_generator(G, tmp_path / "other.pt", meta={})
    with pytest.raises(ValueError, match="another weights_sha256"):
        tr.label(tmp_path / "a", 120, generator=str(other), device="cpu")
    assert len(seen) == 8


def test_chunk_draws_are_what_render_chunk_renders():
    """A labelled chunk's W codes can be recovered without rendering it (``scripts/edit_bottleneck.py``
    fits boundaries on the teacher's labels that way): the same psi, and the same faces from the codes."""
    from facelab.nets.stylegan2 import Generator, StyleGAN2Config

    torch.manual_seed(0)
    G = Generator(StyleGAN2Config(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                                  channel_max=8)).eval()
    faces, psi = next(tr.render_chunk(G, 3, psi_min=0.5, seed=2, batch=10))
    z, psi_drawn = tr.chunk_draws(3, G.z_dim, psi_min=0.5, seed=2)
    assert torch.equal(psi, psi_drawn[:10]) and psi.min() >= 0.5
    with torch.no_grad():
        w = G.mapping.w_avg.lerp(G.mapping(z[:10], truncation_psi=1.0), psi_drawn[:10, None, None])
        torch.manual_seed(2 * 1_000_003 + 3)  # render_chunk's noise for this chunk
        again = G.synthesis(w, noise_mode="random").clamp(-1, 1)
    assert torch.equal(again, faces)
    assert not torch.equal(tr.chunk_draws(4, G.z_dim, psi_min=0.5, seed=2)[0], z)
