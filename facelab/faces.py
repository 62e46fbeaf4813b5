"""Faces in photos: MTCNN face detection, similarity alignment into the world's crop, and measuring that crop.

A photo only works with a generator when its face sits where the generator's faces sit. facelab's
64 px world was trained on faces from the DCGAN teacher, which are all cut the same way (a tight
crop: eyes just below the middle, the chin at the bottom edge). So the world's crop is defined by
measurement: ``measure_template`` runs MTCNN (Zhang et al., "Joint Face Detection and Alignment
using Multitask Cascaded Convolutional Networks", IEEE SPL 2016; facenet-pytorch 2.5.3) on teacher
faces and averages their five landmarks; ``facelab.geometry.WORLD_TEMPLATE`` stores the result.
``align_face`` finds the face in a photo with the same detector and fits the similarity transform
(rotation, uniform scale, shift; least squares on all five landmarks, as in the FFHQ/ArcFace-style
alignments; :func:`facelab.geometry.similarity`) that carries the photo's landmarks onto the
template, then samples the crop::

    import facelab.faces as faces
    x = faces.align_face("me.jpg")                       # [3, 64, 64] in [-1, 1]
    x, info = faces.align_face("group.jpg", index=1, return_info=True)
    faces.find_faces("group.jpg")                       # every face, largest first

Photos are read by :func:`facelab.imaging.load_photo` (paths, files, bytes, PIL images, arrays,
tensors; re-exported here with ``PhotoError``). Every error is one line that names the cause and
the fix: ``FileNotFoundError`` for a missing file, ``PhotoError`` (a ``ValueError``) for a file or
array that is not a usable image, and ``FaceAlignmentError`` (a ``ValueError``) for no face,
several faces without ``index``, or an ``index`` out of range. MTCNN runs on ``device`` (None:
``facelab.get_device()``).

Detection. MTCNN looks for faces of at least 20 px; a photo whose long side exceeds
``detect_size`` (640 px) is shrunk to that size (box filter) for this first search, and the
landmarks are mapped back. Faces below ``min_confidence`` (0.95) are ignored; the rest are
ordered largest first (box area), as MTCNN itself orders them, so ``index=0`` is the most prominent
face. The chosen face is then cut out with its first transform and a margin of half the crop on
every side (a 128 px view in which the face fills the central 64 px: the teacher's 64 px faces
padded by 32 px, exactly how the template was measured), and its landmarks are measured again
there, averaged with those of the mirrored view, before the final fit (``refine=True``). Measuring
photo and template the same way matters: facenet-pytorch stretches the part of a candidate box that
lies inside the image rather than padding it, so faces cut at the chin, as the teacher's are, get
landmarks several pixels off unless they are padded; and MTCNN's landmarks depend on the scale and
have a slight left-right bias, which the common scale and the mirrored view remove. How closely a
teacher face pasted into a larger canvas comes back is in ``docs/world64/alignment.md``
(``tests/test_faces.py`` checks the round trip).

The FFHQ crop. ``align_face(photo, crop="ffhq", size=1024)`` cuts the crop NVIDIA's FFHQ
generators were trained on instead: the oriented square of the FFHQ dataset's alignment script,
computed from the eye centres and mouth corners that MTCNN gives
(:func:`facelab.geometry.ffhq_quad`), with the photo mirrored at its edges where the square leaves it.
The script took those points from dlib's 68 landmarks (each eye centre the mean of six points on its
contour, the mouth corners points 48 and 54); MTCNN's five points are its own estimates of the same
places, so a photo's FFHQ crop here can differ from the dataset's by their disagreement.

Sampling. The crop is taken with bilinear interpolation after averaging the photo down (area) by
the integer factor of the shrink when it is 2x or more (:func:`facelab.geometry.warp`), so large
photos do not alias; where the world crop reaches past the photo the edge pixels repeat (the FFHQ
crop mirrors, above).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .geometry import MIRROR, WORLD_TEMPLATE, ffhq_transform, mirror_landmarks, similarity, warp
from .imaging import DEFAULT_MAX_PIXELS, MIN_PHOTO_SIZE, PhotoError, describe_photo, load_photo, rgb_to_tensor
from .nets.attributes import detect_faces, load_mtcnn

DETECT_SIZE = 640
MTCNN_MIN_FACE = 20  # facenet-pytorch's default min_face_size: no smaller image can be searched
MIN_CONFIDENCE = 0.95
CONTEXT = 0.5  # margin around the crop, as a fraction of its side, where landmarks are measured
CROPS = ("world", "ffhq")
CROP_SIZES = {"world": 64, "ffhq": 1024}  # default sides: world64's and NVIDIA's FFHQ generator's
_CONTEXT_PX = round(64 * (1 + 2 * CONTEXT))  # the 64 px crop with its context, as the template was measured

__all__ = ["CONTEXT", "DEFAULT_MAX_PIXELS", "DETECT_SIZE", "MIN_CONFIDENCE", "MIN_PHOTO_SIZE", "WORLD_TEMPLATE",
           "DetectedFace", "FaceAlignmentError", "PhotoError", "align_face", "align_faces", "find_faces", "load_photo",
           "measure_template", "mirror_landmarks"]


class FaceAlignmentError(ValueError):
    """No face, several faces and no ``index``, or an ``index`` out of range."""


# ---------------------------------------------------------------------------------------------
# Finding faces.


@dataclass
class DetectedFace:
    """One MTCNN face, in the photo's pixels (continuous; pixel i covers [i, i + 1))."""
    box: torch.Tensor        # [4] x0, y0, x1, y1
    landmarks: torch.Tensor  # [5, 2] left eye, right eye, nose, mouth left, mouth right (as seen)
    confidence: float

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def _shrunk(image: Image.Image, longest: int) -> tuple[np.ndarray, float, float]:
    """uint8 [H', W', 3] with the long side at most ``longest``, and the x, y factors back to ``image``."""
    w, h = image.size
    s = min(1.0, longest / max(w, h))
    if s < 1:
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        image = image.resize((sw, sh), Image.BOX)
        return np.asarray(image), w / sw, h / sh
    return np.asarray(image), 1.0, 1.0


def _mtcnn_faces(image: Image.Image, longest: int, min_confidence: float, device) -> list[DetectedFace]:
    if not (isinstance(longest, numbers.Integral) and longest >= MTCNN_MIN_FACE):
        raise ValueError(f"detect_size must be a whole number of pixels >= {MTCNN_MIN_FACE} (MTCNN's smallest "
                         f"face), got {longest!r}; the default is {DETECT_SIZE}")
    arr, fx, fy = _shrunk(image, longest)
    if min(arr.shape[:2]) < MTCNN_MIN_FACE:
        raise PhotoError(f"the photo ({image.width} x {image.height} px) is only {min(arr.shape[:2])} px across once "
                         f"its long side is shrunk to detect_size={longest}, below MTCNN's {MTCNN_MIN_FACE} px; crop "
                         f"it around the face, or search it at full size with detect_size={max(image.size)}")
    boxes, probs, marks = load_mtcnn(device).detect(arr[None], landmarks=True)
    boxes, probs, marks = boxes[0], probs[0], marks[0]
    if boxes is None:
        return []
    scale = torch.tensor([fx, fy], dtype=torch.float32)
    found = [DetectedFace(torch.from_numpy(np.asarray(b, dtype=np.float32)) * scale.repeat(2),
                          torch.from_numpy(np.asarray(m, dtype=np.float32)) * scale, float(p))
             for b, p, m in zip(boxes, probs, marks)]
    found = [f for f in found if f.confidence >= min_confidence]
    return sorted(found, key=lambda f: -f.area)


def find_faces(src, *, detect_size: int = DETECT_SIZE, min_confidence: float = MIN_CONFIDENCE,
               device=None, **load_kw) -> list[DetectedFace]:
    """Every face MTCNN finds in a photo with confidence >= ``min_confidence``, largest first.

    Boxes and landmarks are in the photo's pixels (after the EXIF rotation). ``load_kw`` go to
    ``load_photo`` (``max_pixels``, ``min_size``, ``background``).
    """
    return _mtcnn_faces(load_photo(src, **load_kw), detect_size, min_confidence, device)


# ---------------------------------------------------------------------------------------------
# Alignment.


def _chip_transform(template: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [1], t [1]) complex: photo pixel = z * (u + iv) + t for crop point (u, v) in [0, 1]^2."""
    return similarity(template.float(), landmarks[None].float())


def _sample(image: Image.Image, z: torch.Tensor, t: torch.Tensor, size: int, fill: str = "border") -> torch.Tensor:
    """Crop [3, size, size] in [-1, 1]: only the photo's window under the crop becomes a tensor."""
    corners = z * torch.tensor([0, 1, 1j, 1 + 1j], dtype=torch.complex64) + t  # [4] photo pixels
    pad = 2 + math.ceil(float(z.abs()[0]) / size)  # a few photo pixels for interpolation and area
    left = min(max(0, math.floor(float(corners.real.min())) - pad), image.width - 1)
    top = min(max(0, math.floor(float(corners.imag.min())) - pad), image.height - 1)
    right = max(min(image.width, math.ceil(float(corners.real.max())) + pad), left + 1)
    bottom = max(min(image.height, math.ceil(float(corners.imag.max())) + pad), top + 1)
    window = rgb_to_tensor(image.crop((left, top, right, bottom)))  # [1, 3, h, w]
    return warp(window, z, t - complex(left, top), size, fill=fill)[0].clamp(-1, 1)


def _in_context(z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform of the context view: the crop with CONTEXT of its side added on every side."""
    k = 1 + 2 * CONTEXT
    return z * k, t - z * complex(CONTEXT, CONTEXT)


def _view_landmarks(views: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """MTCNN on context views [N, 3, n, n]: (conf [N], landmarks [N, 5, 2] in view pixels).

    Each view is also seen mirrored and the two answers are averaged: MTCNN's landmarks move by
    about a pixel when the same face is resampled, and it has a slight left-right bias; averaging
    the mirrored answer halves the one's variance and cancels the other. The confidence is the
    lower of the two (0 when either misses the face).
    """
    n, k = views.shape[-1], views.shape[0]
    both = detect_faces(torch.cat([views, views.flip(-1)]), device=device)  # one batch
    back = both.points[k:, list(MIRROR)].clone()  # the mirrored view's landmarks, mirrored back
    back[..., 0] = n - back[..., 0]
    return torch.minimum(both.conf[:k], both.conf[k:]), (both.points[:k] + back) / 2


def _redetect(image: Image.Image, face: DetectedFace, z: torch.Tensor, t: torch.Tensor,
              min_confidence: float, device) -> DetectedFace:
    """Find ``face`` again where the template was measured: a 64 px crop inside a context view."""
    zc, tc = _in_context(z, t)
    n = _CONTEXT_PX
    conf, points = _view_landmarks(_sample(image, zc, tc, n)[None], device)  # view [1, 3, n, n]
    if conf[0] < min_confidence:
        return face
    q = zc * torch.complex(points[0, :, 0], points[0, :, 1]).to(torch.complex64) / n + tc  # [5] photo px
    moved = torch.stack([q.real, q.imag], dim=-1)
    # The largest face of the view must be the one we chose: its eyes lie inside our face's box.
    x0, y0, x1, y1 = face.box.tolist()
    eyes = moved[:2]
    if not ((eyes[:, 0] > x0) & (eyes[:, 0] < x1) & (eyes[:, 1] > y0) & (eyes[:, 1] < y1)).all():
        return face
    return DetectedFace(face.box, moved, face.confidence)


def align_face(src, *, index: int | None = None, size: int | None = None, return_info: bool = False,
               template: torch.Tensor | None = None, crop: str = "world", detect_size: int = DETECT_SIZE,
               min_confidence: float = MIN_CONFIDENCE, refine: bool = True,
               device=None, **load_kw):
    """The face in a photo, aligned into a generator's crop: ``[3, size, size]`` in [-1, 1].

    ``src``: anything ``load_photo`` takes (``load_kw`` go to it). With several faces, pass
    ``index`` (0 = largest; see ``find_faces``). ``crop``: ``"world"`` (facelab's measured crop,
    ``size`` 64 by default) or ``"ffhq"`` (the FFHQ dataset's crop for NVIDIA's generators,
    :func:`facelab.geometry.ffhq_quad`, ``size`` 1024 by default; where it reaches past the photo
    the photo is mirrored at its edges, without the blurred fade the FFHQ script adds there).
    ``template``: landmark positions ``[5, 2]`` in crop fractions for the world crop (default
    ``WORLD_TEMPLATE``). ``refine``: find the landmarks again in the world crop of the face (with
    context around it), the way the template was measured; the FFHQ crop is then cut from those
    landmarks. With ``return_info`` it returns ``(image, info)``:

    - ``box`` [4], ``landmarks`` [5, 2]: the face in the photo's pixels; ``confidence``: MTCNN's;
    - ``transform`` [2, 3]: crop pixel (u, v) (continuous, pixel i covers [i, i + 1)) -> photo
      pixel ``transform @ [u, v, 1]``; ``aligned_landmarks`` [5, 2]: the landmarks in crop pixels;
    - ``faces``: every ``DetectedFace`` found, largest first; ``index``; ``photo_size`` (W, H).
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if crop == "ffhq" and template is not None:
        raise ValueError("template= places faces in the world crop; the FFHQ crop has its own geometry, pass one")
    size = CROP_SIZES[crop] if size is None else size
    if not (isinstance(size, numbers.Integral) and size >= 1):
        raise ValueError(f"size must be a positive number of pixels (the crop's side), got {size!r}")
    template = WORLD_TEMPLATE if template is None else torch.as_tensor(template, dtype=torch.float32)
    if template.shape != (5, 2):
        raise ValueError(f"template must be [5, 2] landmark fractions, got shape {list(template.shape)}")
    name = describe_photo(src)
    image = load_photo(src, **load_kw)
    faces = _mtcnn_faces(image, detect_size, min_confidence, device)
    if not faces:
        raise FaceAlignmentError(f"no face found in {name} ({image.width} x {image.height} px, MTCNN confidence "
                                 f">= {min_confidence}); use a photo with a clearly visible face of at least 20 px, "
                                 f"or lower min_confidence (facelab.faces.align_face)")
    listing = "; ".join(f"{k}: box ({', '.join(f'{v:.0f}' for v in f.box.tolist())}) confidence {f.confidence:.3f}"
                        for k, f in enumerate(faces))
    if index is None and len(faces) > 1:
        raise FaceAlignmentError(f"found {len(faces)} faces in {name}, largest first ({listing}); "
                                 f"pass index=k to choose one (0 = largest)")
    index = 0 if index is None else index
    if not -len(faces) <= index < len(faces):
        raise FaceAlignmentError(f"index={index} but {name} has {len(faces)} face(s) ({listing}); "
                                 f"pass -{len(faces)} <= index < {len(faces)} (0 = largest)")
    face = faces[index]
    z, t = _chip_transform(template, face.landmarks)
    if refine:
        face = _redetect(image, face, z, t, min_confidence, device)
        z, t = _chip_transform(template, face.landmarks)
    if crop == "ffhq":
        z, t = ffhq_transform(face.landmarks[None])
    out = _sample(image, z, t, size, fill="reflect" if crop == "ffhq" else "border")  # [3, size, size]
    if not return_info:
        return out
    a = z[0] / size  # photo pixels per crop pixel, with the rotation
    tf = torch.tensor([[a.real, -a.imag, t[0].real], [a.imag, a.real, t[0].imag]], dtype=torch.float32)
    p = torch.complex(face.landmarks[:, 0], face.landmarks[:, 1]).to(torch.complex64)
    q = (p - t[0]) / a  # [5] crop pixels
    info: dict[str, Any] = {
        "box": face.box, "landmarks": face.landmarks, "confidence": face.confidence, "transform": tf,
        "aligned_landmarks": torch.stack([q.real, q.imag], dim=1), "faces": faces,
        "index": index % len(faces), "photo_size": image.size,
    }
    return out, info


def align_faces(srcs, *, index: int | None = None, size: int | None = None, **kw) -> torch.Tensor:
    """``align_face`` on each photo of a list: ``[N, 3, size, size]`` in [-1, 1] (same ``index`` for all)."""
    out = []
    for i, src in enumerate(srcs):
        try:
            out.append(align_face(src, index=index, size=size, **kw))
        except (PhotoError, FaceAlignmentError) as e:
            raise type(e)(f"photo {i}: {e}") from None
    if not out:
        raise ValueError("align_faces got no photos; pass a non-empty list")
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Measuring the world's crop.


@torch.no_grad()
def measure_photo_template(crop: str = "ffhq", *, size: int = 512, device=None) -> torch.Tensor:
    """Mean MTCNN landmarks ``[5, 2]`` of the sample photos (:func:`facelab.photos.sample_photos`)
    aligned into ``crop`` at ``size`` px, as fractions of its side: where real faces sit in a crop that
    no facelab generator's faces define (the FFHQ crop: :data:`facelab.geometry.FFHQ_TEMPLATE`)."""
    from .imaging import to_pil
    from .photos import sample_photos

    points = []
    for photo in sample_photos().values():
        aligned = align_face(photo.image, crop=crop, size=size, device=device)
        points.append(find_faces(to_pil(aligned), device=device)[0].landmarks / size)
    if not points:
        raise RuntimeError("no sample photo to measure: install matplotlib or scikit-image (facelab.photos)")
    return torch.stack(points).mean(0)


@torch.no_grad()
def measure_template(*, n: int = 4096, seed: int = 0, symmetric: bool = False,
                     min_confidence: float = MIN_CONFIDENCE, batch_size: int = 256,
                     device=None) -> torch.Tensor:
    """Mean MTCNN landmarks ``[5, 2]`` of ``n`` teacher faces, as fractions of the 64 px crop.

    The teacher's faces define the world's crop (the world was trained on them). Each face is seen
    with CONTEXT of its side added around it (edge pixels repeated), as ``align_face`` sees the
    faces of photos: facenet-pytorch stretches the part of a candidate box inside the image instead
    of padding it, so a face cut at the chin, like the teacher's, gets landmarks a few pixels off.
    Faces MTCNN misses or finds with confidence < ``min_confidence`` are left out. ``symmetric``
    averages the result with its mirror image.
    """
    from .nets.teacher import sample_teacher

    points = []
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        faces = sample_teacher(min(batch_size, n - start), generator=generator, device=device).cpu()
        side = faces.shape[-1]
        pad = round(CONTEXT * side)
        conf, found = _view_landmarks(F.pad(faces, (pad,) * 4, mode="replicate"), device)
        points.append((found[conf >= min_confidence] - pad) / side)
    points = torch.cat(points)
    if len(points) == 0:
        raise RuntimeError("MTCNN found no teacher face; check the teacher weights (facelab.nets.teacher)")
    mean = points.mean(0)
    return (mean + mirror_landmarks(mean)) / 2 if symmetric else mean


