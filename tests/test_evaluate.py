"""The world's evaluation: Fréchet distances, face detection, ONet and identity features, model-card update."""
import math

import pytest
import torch

import facelab.nets.attributes as A
from facelab.nets.teacher import sample_teacher
from facelab.train.evaluate import (CARD_END, CARD_START, ONetFeatures, attribute_summary, detection, evaluate,
                                    frechet_distance, identity_features, label_faces, metrics_markdown, mtcnn_faces,
                                    update_card)


def test_frechet_distance_matches_the_closed_form_for_an_affine_copy():
    # b = 2a + mu has mean 2 m_a + mu and covariance 4 S, so FD = |m_a - m_b|^2 + tr(S + 4S - 2 * 2S) = ... + tr(S).
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    mu = torch.arange(6, dtype=torch.float64)
    b = 2 * a + mu
    expected = (a.mean(0) - b.mean(0)).square().sum() + torch.cov(a.T).trace()
    assert abs(frechet_distance(a, b) - float(expected)) < 1e-6 * float(expected)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert abs(frechet_distance(a, b) - frechet_distance(b, a)) < 1e-6 * float(expected)


def test_mtcnn_finds_teacher_faces_and_not_a_blank_image():
    faces = sample_teacher(8, seed=3)
    blank = torch.zeros(2, 3, 64, 64)
    found, conf = detection(torch.cat([faces, blank]))
    assert found[:8].mean() >= 0.75 and (conf[:8][found[:8]] > 0.9).all()
    assert not found[8:].any() and (conf[8:] == 0).all()
    f = mtcnn_faces(torch.cat([faces, blank]), batch_size=3)  # batches are stitched back in order
    assert f.points.shape == (10, 5, 2) and (f.conf.numpy() == conf).all()


def test_onet_features_put_faces_closer_to_faces_than_to_noise():
    onet = ONetFeatures()
    with torch.no_grad():
        a, b = onet(sample_teacher(64, seed=1)), onet(sample_teacher(64, seed=2))
        noise = onet(torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert a.shape == (64, 256)
    assert frechet_distance(a, b) < 0.2 * frechet_distance(a, noise)


def test_identity_features_rank_mirrors_then_other_faces_then_noise():
    # 24 faces in 128-d: finite-sample terms dominate, but the order must hold. Measured 0.026 (the same
    # faces mirrored: same identities), 0.109 (other teacher faces), 0.233 (uniform noise images).
    x = sample_teacher(24, seed=1)
    a, b, mirrored = identity_features(x), identity_features(sample_teacher(24, seed=2)), identity_features(x.flip(-1))
    noise = identity_features(torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert a.shape == (24, 128)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(24))
    assert frechet_distance(a, mirrored) < 0.5 * frechet_distance(a, b) < 0.3 * frechet_distance(a, noise)


def test_labels_from_shared_faces_equal_the_labelers_own_detection():
    x = sample_teacher(6, seed=5)
    faces = mtcnn_faces(x, batch_size=4)
    ours = label_faces(x, faces, labelers=[A.FaceGeometryLabeler()], batch_size=4)
    ref = A.label_images(x, attributes=["yaw", "roll", "mouth_width"], progress=False)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], equal_nan=True)


def test_evaluate_runs_mtcnn_once_per_image_set(G, monkeypatch):
    calls = []
    detect = A.detect_faces

    def counting(images, **kw):
        calls.append(images.shape[0])
        return detect(images, **kw)

    monkeypatch.setattr(A, "detect_faces", counting)
    m = evaluate(G, n=4)  # three sets (world psi 1, world psi 0.7, teacher), each under one batch
    assert len(calls) == 3 and calls == [4, 4, 4]
    assert {"identity_fd_world_vs_teacher", "identity_fd_teacher_vs_teacher", "fod_world_vs_teacher"} <= set(m)
    assert m["identity_fd_world_vs_teacher"] >= 0 and "yaw" in m["attributes"]
    div = m["identity_diversity"]  # world at psi 1 and 0.7, and the second teacher set as the reference
    assert set(div) == {"psi1", "psi07", "teacher"}
    assert all(0 <= row[k] <= 1 for row in div.values() for k in ("precision", "recall"))
    assert "| world, ψ = 0.7 |" in metrics_markdown(m) and "recall" in metrics_markdown(m)
    calls.clear()
    attribute_summary(sample_teacher(2, seed=1), sample_teacher(2, seed=2))  # detects itself when not given faces
    assert len(calls) == 2


def test_update_card_replaces_only_the_metrics_block(tmp_path):
    card = tmp_path / "card.md"
    card.write_text(f"# Title\n\nbefore\n\n{CARD_START}\nold numbers\n{CARD_END}\n\nafter\n")
    m = {"n": 10, "seed": 0, "mtcnn_rate_world": 0.5, "mtcnn_rate_world_psi07": 0.7, "mtcnn_conf_world": 0.9,
         "mtcnn_rate_teacher": 0.9, "mtcnn_conf_teacher": 0.99, "fod_world_vs_teacher": 1.0,
         "fod_teacher_vs_teacher": 0.1, "identity_fd_world_vs_teacher": 0.0272,
         "identity_fd_teacher_vs_teacher": 0.0033, "kimg": 1.0, "train_device": "cpu", "train_minutes": 1.0,
         "params_G": 10}
    update_card(card, m)
    update_card(card, m)  # idempotent
    text = card.read_text()
    assert "old numbers" not in text and text.count(CARD_START) == 1
    assert text.startswith("# Title\n\nbefore") and text.rstrip().endswith("after")
    assert "50.0%" in text and "90.0%" in text
    assert "| Fréchet identity distance to teacher (dlib embeddings) | 0.0272 | 0.0033" in text
    old = {k: v for k, v in m.items() if not k.startswith("identity_fd")}  # metrics.json files from before
    update_card(card, old)
    assert "identity distance" not in card.read_text() and "Fréchet ONet distance" in card.read_text()


def test_precision_and_recall_measure_realism_and_coverage():
    from facelab.train.evaluate import precision_recall
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    same = precision_recall(real, real.clone())
    assert same["precision"] == same["recall"] == 1.0
    far = precision_recall(real, real + 100)
    assert far["precision"] == far["recall"] == 0.0
    collapsed = precision_recall(real, real[:1].repeat(300, 1) + 0.01 * torch.randn(300, 8, generator=g))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05  # realistic but one face
    boot = precision_recall(real, torch.randn(300, 8, generator=g), boot=20)
    assert 0 < boot["precision_sd"] < 0.2 and 0 < boot["recall_sd"] < 0.2


def test_feature_sets_too_small_or_with_nan_rows_are_refused_rather_than_scored():
    from facelab.train.evaluate import frechet_distance, precision_recall
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) + 100
    with pytest.raises(ValueError, match="at least 4 samples per set, got 3 and 3"):
        precision_recall(a, b)  # k = 3 others for every ball: these far-apart sets scored 1.0 / 1.0
    assert precision_recall(torch.cat([a, a[:1] + 0.1]), torch.cat([b, b[:1] + 0.1]))["recall"] == 0.0
    nan_row = torch.cat([torch.randn(20, 4, generator=g), torch.full((1, 4), float("nan"))])
    with pytest.raises(ValueError, match="NaN in precision_recall's first feature set; drop the rows"):
        precision_recall(nan_row, torch.randn(20, 4))  # the NaN row counted as a teacher face never recalled
    with pytest.raises(ValueError, match="NaN in frechet_distance's second feature set"):
        frechet_distance(torch.randn(20, 4), nan_row)
    with pytest.raises(ValueError, match=r"of one width D, got \[20, 4\] and \[20, 5\]"):
        frechet_distance(torch.randn(20, 4), torch.randn(20, 5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(torch.randn(1, 4), torch.randn(20, 4))


def test_the_frechet_bootstrap_spread_is_small_for_large_samples():
    from facelab.train.evaluate import frechet_distance, frechet_distance_sd
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g) + 1
    sd = frechet_distance_sd(a, b, boot=20)
    assert 0 < sd < 0.2 * frechet_distance(a, b)


def test_the_paired_fd_ratio_bootstrap_resamples_the_shared_set_once_for_both_distances():
    """FD(world, teacher) / FD(teacher2, teacher) on 4-d Gaussians: the paired bootstrap sd matches the
    ratio's spread over independent sets, where combining the two FDs' own sds as if independent errs
    wide. (On world64's 128-d embeddings it under-states: scripts/probe_metric_spread.py.)"""
    from facelab.train.evaluate import frechet_distance, frechet_distance_sd, frechet_ratio_sd
    g = torch.Generator().manual_seed(0)

    def sets():  # world (shifted, wider), teacher, a second teacher set
        draw = [torch.randn(300, 4, generator=g) for _ in range(3)]
        return draw[0] * 1.2 + 0.2, draw[1], draw[2]

    def ratio(a, ref, b):
        return frechet_distance(a, ref) / frechet_distance(b, ref)

    between = torch.tensor([ratio(*sets()) for _ in range(60)]).std().item()
    a, ref, b = sets()
    paired = frechet_ratio_sd(a, ref, b, boot=50)
    independent = ratio(a, ref, b) * math.hypot(frechet_distance_sd(a, ref) / frechet_distance(a, ref),
                                                frechet_distance_sd(b, ref, seed=1) / frechet_distance(b, ref))
    assert 0.6 < paired / between < 1.6
    assert independent > 2 * paired
    assert frechet_ratio_sd(a, ref, b, boot=50) == paired  # seeded


def test_the_command_updates_only_a_shipped_generator_s_card_and_keeps_the_json_first(tmp_path, monkeypatch):
    """`evaluate runs/x/G.pkl` wrote facelab/weights/runs/x/G.pkl.md (a file in the package, or a traceback
    after the whole evaluation when its folder was missing, before --json was written)."""
    import json

    from facelab.train import evaluate as E

    monkeypatch.setattr(E, "load_generator", lambda name, device=None: object())
    monkeypatch.setattr(E, "evaluate", lambda G, **kw: {"n": 1})
    monkeypatch.setattr(E, "PACKAGE_WEIGHTS", tmp_path / "weights")
    updated = []
    monkeypatch.setattr(E, "update_card", lambda card, m: updated.append(card))
    for name in ("runs/x/G.pkl", "my.pth", "ffhq"):
        E.main([name, "--json", str(tmp_path / "m.json")])
        assert json.loads((tmp_path / "m.json").read_text()) == {"n": 1}
    assert updated == []
    E.main(["world64"])
    E.main(["runs/x/G.pkl", "--card", str(tmp_path / "mine.md")])
    assert updated == [tmp_path / "weights" / "world64.md", tmp_path / "mine.md"]
