"""The FFHQ crop (#18): facelab.geometry.ffhq_quad reproduces the FFHQ dataset's oriented square, and
``align_face(photo, crop="ffhq")`` puts a real face's eyes and mouth where that geometry says."""
from __future__ import annotations

import math

import pytest
import torch

from facelab.faces import align_face, find_faces
from facelab.geometry import CHIP_TEMPLATE, UNIT_QUAD, ffhq_quad, ffhq_transform, quad_transform, similarity, warp

# An upright face, eyes 1 apart, mouth 1 below them: eye_to_eye (1, 0), eye_to_mouth (0, 1), so
# x = (1, 0) - (-1, 0) = (2, 0) normalised to (1, 0), times max(2 * 1, 1.8 * 1) = 2; y = (0, 2);
# c = (0, 0.1). Corners c -x -y, c -x +y, c +x +y, c +x -y:
FACE = torch.tensor([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.55], [-0.4, 1.0], [0.4, 1.0]])
FACE_QUAD = torch.tensor([[-2.0, -1.9], [-2.0, 2.1], [2.0, 2.1], [2.0, -1.9]])
# ... so in the crop (fractions of its side) the eyes sit at (0.5 -+ 0.125, 0.475), the mouth corners
# at (0.4, 0.725) and (0.6, 0.725).
FACE_IN_CROP = torch.tensor([[0.375, 0.475], [0.625, 0.475], [0.5, 0.6125], [0.4, 0.725], [0.6, 0.725]])


def similar(points: torch.Tensor, angle: float, scale: float, shift) -> torch.Tensor:
    """points [..., 2] rotated by ``angle`` degrees (clockwise on screen: y is down), scaled, shifted."""
    a = math.radians(angle)
    r = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=points.dtype)
    return scale * points @ r.T + torch.tensor(shift, dtype=points.dtype)


def test_the_canonical_face_gives_the_hand_computed_quad():
    assert torch.allclose(ffhq_quad(FACE), FACE_QUAD, atol=1e-6)
    # A long face: the eye-to-mouth term sets the size (1.8 * 1.5 = 2.7 > 2 * 1).
    long_face = FACE * torch.tensor([1.0, 1.5])
    side = ffhq_quad(long_face)[3] - ffhq_quad(long_face)[0]  # top-right - top-left = 2x
    assert torch.allclose(side, torch.tensor([5.4, 0.0]), atol=1e-5)
    # The nose is not part of the geometry.
    moved = FACE.clone()
    moved[2] += torch.tensor([0.3, -0.2])
    assert torch.equal(ffhq_quad(moved), ffhq_quad(FACE))


def test_a_mouth_off_the_eyes_axis_tilts_the_quad_as_the_ffhq_script_does():
    # Mouth centre shifted sideways by s: eye_to_mouth (s, 1), so x = (1, 0) - (-1, s) = (2, -s): the
    # script leans the square's top edge by atan(s / 2) against the eye line, half-side max(2, 1.8 |(s, 1)|).
    s = 0.6
    face = FACE + torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [s, 0.0], [s, 0.0]])
    quad = ffhq_quad(face)
    top = quad[3] - quad[0]  # 2x
    half = max(2.0, 1.8 * math.hypot(s, 1.0))
    assert torch.allclose(top, 2 * half * torch.tensor([2.0, -s]) / math.hypot(2.0, s), atol=1e-5)
    assert torch.allclose(quad.mean(0), torch.tensor([0.1 * s, 0.1]), atol=1e-6)  # c = eye_avg + 0.1 eye_to_mouth


@pytest.mark.parametrize("angle, scale, shift", [(0.0, 1.0, (0.0, 0.0)), (17.0, 40.0, (300.0, 210.0)),
                                                 (-35.0, 3.5, (-12.0, 80.0)), (90.0, 120.0, (512.0, 512.0))])
def test_a_rotated_scaled_shifted_face_maps_to_the_canonical_quad(angle, scale, shift):
    photo = similar(FACE, angle, scale, shift)  # [5, 2] photo pixels
    assert torch.allclose(ffhq_quad(photo), similar(FACE_QUAD, angle, scale, shift), atol=1e-3 * scale)
    z, t = ffhq_transform(photo[None])  # crop (u, v) in [0, 1]^2 -> photo pixel z (u + iv) + t
    p = torch.complex(photo[:, 0], photo[:, 1]).to(torch.complex64)
    back = (p - t) / z  # [5] crop fractions
    assert torch.allclose(torch.stack([back.real, back.imag], -1), FACE_IN_CROP, atol=1e-4)
    # Any face, not just a symmetric one: the quad moves with the face (equivariance), batched.
    g = torch.Generator().manual_seed(int(angle) % 7)
    faces = FACE + 0.1 * torch.randn(3, 5, 2, generator=g)  # [3, 5, 2]
    got = ffhq_quad(similar(faces, angle, scale, shift))
    assert got.shape == (3, 4, 2)
    assert torch.allclose(got, similar(ffhq_quad(faces), angle, scale, shift), atol=1e-3 * scale)


def test_quad_transform_is_exact_on_a_square_and_reflect_mirrors_the_image():
    z, t = quad_transform(FACE_QUAD[None])
    corners = z * torch.complex(UNIT_QUAD[:, 0], UNIT_QUAD[:, 1]) + t
    assert torch.allclose(torch.stack([corners.real, corners.imag], -1), FACE_QUAD, atol=1e-5)
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)  # x ramp: pixel i has value i
    # a crop of 8 px over x in [-4, 4): its left half lies outside the image, mirrored at the edge
    out = warp(ramp, torch.tensor([8 + 0j]), torch.tensor([-4 + 0j]), 8, fill="reflect")[0, 0, 0]
    assert torch.allclose(out, torch.tensor([3.0, 2, 1, 0, 0, 1, 2, 3]))
    with pytest.raises(ValueError, match="fill must be"):
        warp(ramp, torch.tensor([8 + 0j]), torch.tensor([0j]), 8, fill="wrap")


@pytest.fixture(scope="module")
def grace_path():
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def test_grace_hoppers_eyes_land_where_ffhq_puts_them(grace_path):
    size = 256
    out, info = align_face(grace_path, crop="ffhq", size=size, return_info=True)
    assert out.shape == (3, size, size) and out.min() >= -1 and out.max() <= 1
    # The fit: her landmarks in the crop are where the geometry puts a face like hers (their quad is the crop).
    aligned = info["aligned_landmarks"] / size  # [5, 2] crop fractions
    assert torch.allclose(ffhq_quad(aligned), UNIT_QUAD, atol=1e-4)
    # MTCNN, run again on the aligned face, finds her eyes and mouth there (a few % of the side).
    found = find_faces(out)
    assert len(found) == 1 and found[0].confidence > 0.95
    marks = found[0].landmarks / size  # [5, 2]
    assert (ffhq_quad(marks) - UNIT_QUAD).norm(dim=1).max() < 0.04
    eyes = marks[:2]
    assert (eyes - aligned[:2]).norm(dim=1).max() < 0.03
    assert abs(float(eyes[:, 0].mean()) - 0.5) < 0.02  # the eyes' midpoint is centred ...
    assert abs(float(eyes[1, 1] - eyes[0, 1])) < 0.02  # ... level ...
    assert 0.2 < float(eyes[1, 0] - eyes[0, 0]) <= 0.25 + 0.02  # ... and at most 1/4 of the side apart
    # The world crop is unchanged by the new option, and the FFHQ crop defaults to 1024 px.
    assert torch.equal(align_face(grace_path, crop="world"), align_face(grace_path))
    assert align_face(grace_path, crop="ffhq", refine=False).shape == (3, 1024, 1024)
    with pytest.raises(ValueError, match="crop must be one of"):
        align_face(grace_path, crop="dlib")


def test_a_template_kept_on_the_cpu_meets_landmarks_on_another_device():
    # CHIP_TEMPLATE lives on the CPU; landmarks of faces labelled on a GPU do not ('meta' stands in for it:
    # a [3]-point CPU tensor met a [N, 3] device tensor inside similarity and the age labeler failed on CUDA)
    z, t = similarity(CHIP_TEMPLATE, torch.zeros(2, 3, 2, device="meta"))
    assert z.device.type == t.device.type == "meta" and z.shape == t.shape == (2,)
