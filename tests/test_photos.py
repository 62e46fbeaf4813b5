"""facelab.photos: the installed openly licensed face photos, each with source and licence."""
from __future__ import annotations

import dataclasses

import pytest

from facelab.photos import SamplePhoto, sample_photos
from facelab.imaging import to_tensor
from facelab.nets.attributes import detect_faces


def test_sample_photos_are_rgb_faces_with_source_and_licence():
    photos = sample_photos()
    assert list(photos)[:1] == ["grace_hopper"]  # matplotlib is a core dependency
    for name, p in photos.items():
        assert isinstance(p, SamplePhoto) and p.image.mode == "RGB" and min(p.size) >= 256
        assert "public domain" in p.licence and p.package and p.source
        assert detect_faces(to_tensor(p.image)).found.all(), f"{name}: no face found"
    with pytest.raises(dataclasses.FrozenInstanceError):
        photos["grace_hopper"].licence = "x"


def test_astronaut_is_listed_when_scikit_image_is_installed():
    pytest.importorskip("skimage")
    assert list(sample_photos()) == ["grace_hopper", "astronaut"]
