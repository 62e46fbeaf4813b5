"""The world's evaluation: Fréchet distance, face detection, ONet features, model-card update."""
import torch

from facelab.nets.teacher import sample_teacher
from facelab.train.evaluate import CARD_END, CARD_START, ONetFeatures, detect_faces, frechet_distance, update_card


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
    found, conf = detect_faces(torch.cat([faces, blank]))
    assert found[:8].mean() >= 0.75 and (conf[:8][found[:8]] > 0.9).all()
    assert not found[8:].any() and (conf[8:] == 0).all()


def test_onet_features_put_faces_closer_to_faces_than_to_noise():
    onet = ONetFeatures()
    with torch.no_grad():
        a, b = onet(sample_teacher(64, seed=1)), onet(sample_teacher(64, seed=2))
        noise = onet(torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert a.shape == (64, 256)
    assert frechet_distance(a, b) < 0.2 * frechet_distance(a, noise)


def test_update_card_replaces_only_the_metrics_block(tmp_path):
    card = tmp_path / "card.md"
    card.write_text(f"# Title\n\nbefore\n\n{CARD_START}\nold numbers\n{CARD_END}\n\nafter\n")
    m = {"n": 10, "seed": 0, "mtcnn_rate_world": 0.5, "mtcnn_rate_world_psi07": 0.7, "mtcnn_conf_world": 0.9,
         "mtcnn_rate_teacher": 0.9, "mtcnn_conf_teacher": 0.99, "fod_world_vs_teacher": 1.0,
         "fod_teacher_vs_teacher": 0.1, "kimg": 1.0, "train_device": "cpu", "train_minutes": 1.0, "params_G": 10}
    update_card(card, m)
    update_card(card, m)  # idempotent
    text = card.read_text()
    assert "old numbers" not in text and text.count(CARD_START) == 1
    assert text.startswith("# Title\n\nbefore") and text.rstrip().endswith("after")
    assert "50.0%" in text and "90.0%" in text
