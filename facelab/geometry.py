"""Face geometry: landmark templates, similarity transforms and the crops ("chips") they cut.

Points are ``(x, y)`` with x to the right and y down. Image pixels are continuous, pixel ``i``
covering ``[i, i + 1)``; template points are fractions of a crop's side (so any size works). The
five landmarks are MTCNN's, in its order: left eye, right eye, nose tip, mouth left, mouth right,
*as seen in the image*.

A similarity transform (rotation, uniform scale, shift) is two complex numbers ``(z, t)``: the crop
point ``u + iv`` in ``[0, 1]^2`` sits at image pixel ``z (u + iv) + t``. :func:`similarity` fits one
by least squares; :func:`warp` samples the crop it defines (bilinear, differentiable, averaging the
image down first when the crop shrinks it 2x or more, so nothing aliases).

The world's crop: :data:`WORLD_TEMPLATE` is where faces sit in it, measured by
:func:`facelab.faces.measure_template` (MTCNN on teacher faces, each seen with context around it);
:func:`facelab.faces.align_face` carries a photo's landmarks onto it. :data:`CHIP_TEMPLATE` is
where MTCNN's eyes and nose sit in a dlib face chip (padding 0.2), :func:`chip_template` the same
for another padding; :func:`align_chips` and :func:`box_crops` cut the crops the labelers of
:mod:`facelab.nets.attributes` were trained on, and :func:`facelab.metrics.world_chips` the identity
network's chips from world-aligned faces (with the same :data:`WORLD_TEMPLATE`: the world has one
measured crop), or from FFHQ-aligned ones with :data:`FFHQ_TEMPLATE`.

The FFHQ crop: :func:`ffhq_quad` is the oriented square the FFHQ dataset cuts around a face (from
the eye centres and mouth corners), :func:`ffhq_transform` the same as a transform for :func:`warp`;
:func:`facelab.faces.align_face` uses it with ``crop="ffhq"`` for NVIDIA's FFHQ generators.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# MTCNN's five landmarks on the teacher's faces, i.e. in the world's 64 px crop, as fractions of the
# crop's side, each face seen with context and mirrored as ``facelab.faces.measure_template``
# describes. Measured on n = 4096 teacher faces, of which 3749 (91.5 %) were found with confidence
# >= 0.95 and kept (docs/world64/alignment.md), with
#     python -c "import facelab.faces as f; print(f.measure_template(n=4096, seed=0))"
# Spread (std) across faces: eyes 0.025 (x) / 0.017 (y), nose 0.056 / 0.026 (it moves with yaw),
# mouth corners 0.030 / 0.022.
# Not symmetrised: the world was trained on the teacher's faces without left-right flips (the
# symmetrised template differs by at most 0.0028, 0.2 px).
WORLD_TEMPLATE = torch.tensor([
    [0.3510, 0.4715],
    [0.6515, 0.4686],
    [0.5006, 0.6649],
    [0.3744, 0.8310],
    [0.6312, 0.8288],
])

# MTCNN's five landmarks in the FFHQ crop (ffhq_quad), as fractions of its side: no facelab generator's
# faces define that crop, so it is measured on the two public-domain sample photos (facelab.photos),
# aligned the FFHQ way at 512 px, with
#     python -c "import facelab.faces as f; print(f.measure_photo_template('ffhq'))"
# The alignment pins the eyes (the two photos agree within 0.008); the nose differs by 0.025 in y.
# Faces sit smaller here than in the world's crop (eye distance 0.25 of the side against 0.30): chips
# cut from FFHQ-cropped faces with WORLD_TEMPLATE would take in 1.2x too much around the face.
FFHQ_TEMPLATE = torch.tensor([
    [0.3762, 0.4671],
    [0.6248, 0.4692],
    [0.5081, 0.6155],
    [0.3878, 0.7025],
    [0.6206, 0.7028],
])

CROP_TEMPLATES = {"world": WORLD_TEMPLATE, "ffhq": FFHQ_TEMPLATE}  # where MTCNN's landmarks sit in each crop

MIRROR = (1, 0, 2, 4, 3)  # landmark order after a left-right flip

# MTCNN's left eye, right eye and nose in a dlib face chip (padding 0.2), in chip units [0, 1]
# (measured on two public-domain portraits; see facelab.nets.attributes).
CHIP_TEMPLATE = torch.tensor([[0.308, 0.295], [0.692, 0.295], [0.5, 0.524]])
CHIP_TEMPLATE_PADDING = 0.2


def mirror_landmarks(points: torch.Tensor) -> torch.Tensor:
    """Landmark fractions ``[..., 5, 2]`` of the left-right mirrored face (x -> 1 - x, sides swapped)."""
    flipped = points[..., list(MIRROR), :].clone()
    flipped[..., 0] = 1 - flipped[..., 0]
    return flipped


def chip_template(padding: float) -> torch.Tensor:
    """:data:`CHIP_TEMPLATE` moved into a dlib chip of another ``padding`` ([3, 2], chip units).

    dlib places its mean face ``m`` in [0, 1]^2 at chip coordinate ``(padding + m) / (1 + 2 padding)``
    (``get_face_chip_details``), so a point at ``u`` in the padding-0.2 chip sits at
    ``0.5 + (u - 0.5) (1 + 2 * 0.2) / (1 + 2 padding)``.
    """
    ratio = (1 + 2 * CHIP_TEMPLATE_PADDING) / (1 + 2 * padding)
    return 0.5 + (CHIP_TEMPLATE - 0.5) * ratio


def similarity(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity (rotation, scale, shift) taking src [K, 2] onto dst [N, K, 2].

    Returns (z [N], t [N]) as complex numbers on dst's device: dst ~ z * src + t (src, often a
    template kept on the CPU, moves there).
    """
    src = src.to(dst.device)
    a = torch.complex(src[:, 0], src[:, 1]).to(torch.complex64)[None]   # [1, K]
    b = torch.complex(dst[..., 0], dst[..., 1]).to(torch.complex64)     # [N, K]
    a0, b0 = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    z = (a0.conj() * b0).sum(1) / (a0.abs() ** 2).sum(1)
    return z, b.mean(1) - z * a.mean(1)


def warp(images: torch.Tensor, z: torch.Tensor, t: torch.Tensor, size: int, *, fill: str) -> torch.Tensor:
    """Crops [N, C, size, size]: chip point (u, v) in [0, 1]^2 is image pixel z * (u + iv) + t.

    Shrinking by 2x or more first averages the image down (area), so crops do not alias.
    ``fill``: "black" (pixels outside are -1, as dlib does), "border" (edge pixels repeat) or
    "reflect" (the image mirrored at its edges, as the FFHQ dataset pads; the mirror repeats the edge
    pixel, as numpy's "symmetric" does, where the FFHQ script's numpy "reflect" does not).
    """
    n, _, h, w = images.shape
    shrink = int(max(1.0, float((z.abs() / size).min())))  # image pixels per chip pixel
    if shrink >= 2:  # grid_sample's coordinates are relative to the image's extent: nothing to rescale
        images = F.interpolate(images, size=(max(1, h // shrink), max(1, w // shrink)), mode="area")
    g = (torch.arange(size, dtype=torch.float32, device=images.device) + 0.5) / size
    uv = torch.complex(g[None, :].expand(size, size), g[:, None].expand(size, size))  # [S, S]: x + iy
    p = z.to(images.device)[:, None, None] * uv + t.to(images.device)[:, None, None]   # [N, S, S] pixels
    grid = torch.stack([p.real * (2 / w) - 1, p.imag * (2 / h) - 1], dim=-1).to(images.dtype)  # [N, S, S, 2]
    if fill == "black":
        return F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    if fill == "reflect":
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if fill != "border":
        raise ValueError(f"fill must be 'black', 'border' or 'reflect', got {fill!r}")
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def ffhq_quad(landmarks: torch.Tensor) -> torch.Tensor:
    """The FFHQ dataset's crop of a face: an oriented square ``[..., 4, 2]`` in the landmarks' pixels.

    ``landmarks``: ``[..., 5, 2]`` in MTCNN's order (left eye, right eye, nose, mouth left, mouth
    right, as seen in the image; the nose is not used). The geometry of NVIDIA's ffhq-dataset
    ``recreate_aligned_images`` (Karras et al., "A Style-Based Generator Architecture for GANs",
    CVPR 2019), with eye centres and mouth corners: ``x`` points along the eyes, tilted by the
    eye-to-mouth direction, with half-side ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``; ``y`` is ``x``
    turned 90 degrees (down); the centre sits 0.1 of the eye-to-mouth vector below the eyes' midpoint.
    Corners in FFHQ's order: top-left, bottom-left, bottom-right, top-right.
    """
    p = landmarks.double()
    eye_left, eye_right, mouth_left, mouth_right = p[..., 0, :], p[..., 1, :], p[..., 3, :], p[..., 4, :]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - torch.stack([-eye_to_mouth[..., 1], eye_to_mouth[..., 0]], dim=-1)  # [..., 2]
    x = x / x.norm(dim=-1, keepdim=True)
    x = x * torch.maximum(eye_to_eye.norm(dim=-1) * 2.0, eye_to_mouth.norm(dim=-1) * 1.8)[..., None]
    y = torch.stack([-x[..., 1], x[..., 0]], dim=-1)  # x turned a quarter towards +y (down the image)
    c = eye_avg + eye_to_mouth * 0.1
    quad = torch.stack([c - x - y, c - x + y, c + x + y, c + x - y], dim=-2)  # [..., 4, 2]
    return quad.to(landmarks.dtype if landmarks.is_floating_point() else torch.float32)


UNIT_QUAD = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # the crop's corners, in ffhq_quad's order


def quad_transform(quad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [N], t [N]) complex taking the crop's unit square onto ``quad`` [N, 4, 2] (least squares).

    Crop point (u, v) in [0, 1]^2 sits at image pixel ``z (u + iv) + t``, as :func:`warp` expects;
    for an oriented square such as :func:`ffhq_quad`'s the fit is exact.
    """
    return similarity(UNIT_QUAD, quad.float())


def ffhq_transform(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [N], t [N]): the FFHQ crop (:func:`ffhq_quad`) of landmarks [N, 5, 2] as a :func:`warp` transform."""
    return quad_transform(ffhq_quad(landmarks))


def align_chips(images: torch.Tensor, points: torch.Tensor, size: int, *, fill: str = "border") -> torch.Tensor:
    """dlib-style face chips (padding 0.2) [N, 3, size, size] in [-1, 1] from MTCNN landmarks [N, 5, 2].

    ``fill="black"`` reproduces dlib's chips exactly where they reach past the image.
    """
    z, t = similarity(CHIP_TEMPLATE, points[:, :3].float())
    return warp(images, z, t, size, fill=fill)


def box_crops(images: torch.Tensor, boxes: torch.Tensor, size: int, *, scale: float = 0.9,
              lift: float = 0.035) -> torch.Tensor:
    """Upright square crops [N, 3, size, size]: side ``scale`` x box height, centre ``lift`` higher."""
    side = scale * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - lift * (boxes[:, 3] - boxes[:, 1])
    z = torch.complex(side, torch.zeros_like(side))
    t = torch.complex(cx - side / 2, cy - side / 2)
    return warp(images, z, t, size, fill="border")


__all__ = ["CHIP_TEMPLATE", "CROP_TEMPLATES", "FFHQ_TEMPLATE", "MIRROR", "UNIT_QUAD", "WORLD_TEMPLATE", "align_chips",
           "box_crops", "chip_template", "ffhq_quad", "ffhq_transform", "mirror_landmarks", "quad_transform",
           "similarity", "warp"]
