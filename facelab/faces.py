"""Photos into the world's crop: loading, MTCNN face detection and similarity alignment.

A photo only works with a generator when its face sits where the generator's faces sit. facelab's
64 px world was trained on faces from the DCGAN teacher, which are all cut the same way (a tight
crop: eyes just below the middle, the chin at the bottom edge). So the world's crop is defined by
measurement: ``measure_template`` runs MTCNN (Zhang et al., "Joint Face Detection and Alignment
using Multitask Cascaded Convolutional Networks", IEEE SPL 2016; facenet-pytorch 2.5.3) on teacher
faces and averages their five landmarks; ``WORLD_TEMPLATE`` stores the result. ``align_face`` finds
the face in a photo with the same detector and fits the similarity transform (rotation, uniform
scale, shift; least squares on all five landmarks, as in the FFHQ/ArcFace-style alignments) that
carries the photo's landmarks onto the template, then samples the crop::

    import facelab.faces as faces
    x = faces.align_face("me.jpg")                       # [3, 64, 64] in [-1, 1]
    x, info = faces.align_face("group.jpg", index=1, return_info=True)
    faces.find_faces("group.jpg")                       # every face, largest first

Photos (``load_photo``): a path, a binary file or bytes, a PIL image, a numpy array (``[H, W]``, ``[H, W, 1|3|4]``; uint8,
uint16, bool, or float in [0, 1]) or a tensor in [-1, 1]. Grayscale, palette, CMYK and 16-bit images
are converted to RGB (8 bits per channel, plenty for a 64 px crop; ICC profiles are not applied);
transparent pixels are composited onto ``background`` (white by default; ``background=None`` drops
the alpha channel instead, which shows whatever colour the transparent pixels happen to store); the
EXIF orientation is applied, so phone photos come out upright. Files bigger than ``max_pixels``
(64 megapixels by default) are refused from their header, before any pixel is decoded, as a guard
against decompression bombs; pass ``max_pixels=None`` or a larger number for a file you trust.

Every error is one line that names the cause and the fix: ``FileNotFoundError`` for a missing
file, ``PhotoError`` (a ``ValueError``) for a file or array that is not a usable image, and
``FaceAlignmentError`` (a ``ValueError``) for no face, several faces without ``index``, or an
``index`` out of range.

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
have a slight left-right bias, which the common scale and the mirrored view remove. On teacher faces
pasted into larger canvases (scale 1.3-3.2, rotation up to 8 degrees) the aligned crop matches the
alignment of the original 64 px face to a mean absolute error of 0.07 on average (median 0.05) in
[-1, 1] units: what is left is MTCNN's landmark noise, about a pixel of the 64 px crop.

Sampling. The crop is taken with bilinear interpolation after averaging the photo down (area) by
the integer factor of the shrink when it is 2x or more (``facelab.nets.attributes._warp``), so large
photos do not alias; where the crop reaches past the photo the edge pixels repeat.
"""
from __future__ import annotations

import io
import math
import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .imaging import check_image_values, rgb_to_tensor, to_uint8
from .nets import attributes as _attributes

DEFAULT_MAX_PIXELS = 64_000_000
MIN_PHOTO_SIZE = 32
DETECT_SIZE = 640
MTCNN_MIN_FACE = 20  # facenet-pytorch's default min_face_size: no smaller image can be searched
MIN_CONFIDENCE = 0.95
CONTEXT = 0.5  # margin around the crop, as a fraction of its side, where landmarks are measured
_CONTEXT_PX = round(64 * (1 + 2 * CONTEXT))  # the 64 px crop with its context, as the template was measured

# MTCNN's five landmarks (left eye, right eye, nose tip, mouth left, mouth right, as seen in the
# image) on the teacher's faces, i.e. in the world's 64 px crop, as fractions of the crop's side
# (x right, y down; pixel i covers [i, i + 1) / 64), each face seen with context and mirrored as
# ``measure_template`` describes. Measured on n = 4096 teacher faces, of which 3749 (91.5 %) were
# found with confidence >= 0.95 and kept (about 7 minutes on 2 CPU cores), with
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
_MIRROR = [1, 0, 2, 4, 3]  # landmark order after a left-right flip


class PhotoError(ValueError):
    """The input is not a usable image (unreadable, too small, too large, wrong array format)."""


class FaceAlignmentError(ValueError):
    """No face, several faces and no ``index``, or an ``index`` out of range."""


# ---------------------------------------------------------------------------------------------
# Loading photos.


def _describe(src) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, np.ndarray):
        return f"the {src.dtype} array of shape {list(src.shape)}"
    if isinstance(src, torch.Tensor):
        return f"the tensor of shape {list(src.shape)}"
    named = getattr(src, "filename", None) or getattr(src, "name", None)  # a PIL image's or a file's
    return named if isinstance(named, str) and named else f"the {type(src).__name__}"


def _too_large(name: str, pixels: str, max_pixels: int) -> PhotoError:
    return PhotoError(f"{name} is too large ({pixels}, more than max_pixels={max_pixels:,}; a guard against "
                      f"decompression bombs); if you trust the file pass max_pixels=None or a larger limit, "
                      f"or downscale it first")


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]} x {size[1]} = {size[0] * size[1] / 1e6:.1f} megapixels"


def _open_file(src, name: str, max_pixels: int | None) -> Image.Image:
    """Open and decode an image file; the size is checked from the header before decoding."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    # PIL's own guard (a warning above MAX_IMAGE_PIXELS, an error above twice that) stays in place
    # unless the caller asked for more than it allows; then it is lifted for this call only.
    lift = pil_limit is not None and (max_pixels is None or max_pixels > pil_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
        try:
            if lift:
                Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(src)
            finally:
                if lift:
                    Image.MAX_IMAGE_PIXELS = pil_limit
        except Image.DecompressionBombError as e:
            m = re.search(r"\((\d+) pixels\)", str(e))  # PIL's message gives the size
            raise _too_large(name, f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "more pixels than PIL allows",
                             max_pixels) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if isinstance(e, IsADirectoryError):
                raise PhotoError(f"{name} is a directory; pass the path of an image file") from None
            why = "no image format recognised" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
            raise PhotoError(f"cannot read {name} as an image ({why}); check that it is a photo (PNG, JPEG, ...) "
                             f"and not another file renamed, or re-save it as PNG/JPEG") from None
    with im:
        return _decode(im, name, max_pixels)


def _decode(im: Image.Image, name: str, max_pixels: int | None) -> Image.Image:
    """Check the size from the header, then decode: an upright (EXIF-rotated) decoded copy."""
    if max_pixels is not None and im.width * im.height > max_pixels:
        raise _too_large(name, _size(im.size), max_pixels)
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise PhotoError(f"cannot decode {name} ({type(e).__name__}: {e}); the file is truncated or "
                         f"corrupt: re-save or re-download it") from None
    return ImageOps.exif_transpose(im)


def _unit_range(a: np.ndarray, mode: str) -> np.ndarray:
    """A PIL 'I', 'I;16*' or 'F' image's values as float in [0, 1].

    'I;16' is 16-bit; 'I' (32-bit integers, how some readers give 16-bit PNGs) is read as 8-bit when
    no value exceeds 255 and as 16-bit otherwise; 'F' as [0, 1] when no value exceeds 1, else likewise.
    """
    a = a.astype(np.float64)
    hi = float(a.max()) if a.size else 0.0
    if mode == "F" and hi <= 1.0:
        return np.clip(a, 0, 1)
    scale = 255.0 if (hi <= 255 and not mode.startswith("I;16")) else 65535.0
    return np.clip(a / scale, 0, 1)


def _composite(rgba: Image.Image, background) -> Image.Image:
    if background is None:
        return rgba.convert("RGB")
    bg = Image.new("RGBA", rgba.size, tuple(int(c) for c in background) + (255,))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _pil_to_rgb(im: Image.Image, background, name: str) -> Image.Image:
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):  # PIL's convert clips these to 255 instead of scaling
        gray = (_unit_range(np.asarray(im), mode) * 255).round().astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "P":
        mode = "RGBA" if im.has_transparency_data else "RGB"
        im = im.convert(mode)
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa"):
            return _composite(im.convert("RGBA"), background)
        return im.convert("RGB")
    except ValueError as e:
        raise PhotoError(f"cannot convert {name} from PIL mode {mode} to RGB ({e}); convert it to RGB first") from None


def _array_to_rgb(a: np.ndarray, name: str, background) -> Image.Image:
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        raise PhotoError(f"{name} looks channels-first; pass [H, W, C] (e.g. a.transpose(1, 2, 0))")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise PhotoError(f"{name} is not an image; expected [H, W] (gray), [H, W, 3] (RGB) or [H, W, 4] (RGBA)")
    if a.dtype == np.bool_:
        x = a.astype(np.float64)
    elif a.dtype == np.uint8:
        x = a / 255.0
    elif a.dtype == np.uint16:
        x = a / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 0.0)
        if not np.isfinite(a).all() or lo < -1e-3 or hi > 1 + 1e-3:
            raise PhotoError(f"float image arrays must be in [0, 1], {name} has values in [{lo:.3g}, {hi:.3g}]; "
                             "from [-1, 1] use (a + 1) / 2, from [0, 255] use a.astype(np.uint8)")
        x = np.clip(a.astype(np.float64), 0, 1)
    else:
        raise PhotoError(f"{name}: image arrays must be uint8, uint16, bool or float in [0, 1]; "
                         "convert it, e.g. a.astype(np.uint8) for values in [0, 255]")
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    if x.shape[2] == 4:
        alpha = x[..., 3:]
        x = x[..., :3] if background is None else \
            x[..., :3] * alpha + np.asarray(background, dtype=np.float64) / 255.0 * (1 - alpha)
    return Image.fromarray((x * 255).round().astype(np.uint8), "RGB")


def load_photo(src, *, as_tensor: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_size: int = MIN_PHOTO_SIZE, background: tuple[int, int, int] | None = (255, 255, 255)):
    """A photo as an upright RGB PIL image, or as a tensor ``[1, 3, H, W]`` in [-1, 1] (``as_tensor``).

    ``src``: a path (str or Path), an open binary file or encoded bytes, a PIL image, a numpy array ``[H, W]``,
    ``[H, W, 1|3|4]`` (uint8, uint16, bool, or float in [0, 1]), or a tensor ``[3, H, W]`` /
    ``[1, 3, H, W]`` in [-1, 1]. Conversions (gray, palette, CMYK, 16-bit, alpha onto ``background``
    or dropped with ``background=None``, EXIF orientation) are described in the module docstring.
    Raises ``FileNotFoundError`` for a missing file and ``PhotoError`` for an unreadable file, a
    photo with fewer than ``min_size`` pixels on its short side, or a file with more than
    ``max_pixels`` pixels (checked before decoding; ``None`` turns the check off).
    """
    name = _describe(src)
    if isinstance(src, (str, Path)):
        path = Path(src).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
            raise FileNotFoundError(f"no photo at {src}{where}; check the path and the file name")
        im = _pil_to_rgb(_open_file(path, name, max_pixels), background, name)
    elif isinstance(src, (bytes, bytearray)) or hasattr(src, "read"):  # encoded bytes or a binary file
        src = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
        im = _pil_to_rgb(_open_file(src, name, max_pixels), background, name)
    elif isinstance(src, Image.Image):
        im = _pil_to_rgb(_decode(src, name, max_pixels), background, name)  # it may not be decoded yet
    elif isinstance(src, np.ndarray):
        im = _array_to_rgb(src, name, background)
    elif isinstance(src, torch.Tensor):
        x = src[0] if src.ndim == 4 and src.shape[0] == 1 else src
        if x.ndim != 3 or x.shape[0] != 3:
            raise PhotoError(f"{name}: a tensor photo must be [3, H, W] or [1, 3, H, W] in [-1, 1]")
        if not x.is_floating_point():
            raise PhotoError(f"{name}: a tensor photo must be float in [-1, 1] (facelab's image convention); "
                             "from [0, 1] use x * 2 - 1, from [0, 255] use x / 127.5 - 1")
        check_image_values(x, f"{name} (a tensor photo)", limit=1.001, error=PhotoError)
        im = Image.fromarray(to_uint8(x))
    else:
        raise PhotoError(f"cannot use {name} as a photo; pass a path, a PIL image, a numpy array or a tensor")
    if min(im.size) < min_size:
        raise PhotoError(f"{name} is only {im.width} x {im.height} px; photos need at least {min_size} px on "
                         f"the short side (MTCNN finds faces from about 20 px): use a larger photo")
    return rgb_to_tensor(im) if as_tensor else im


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
    boxes, probs, marks = _attributes._mtcnn(str(device)).detect(arr[None], landmarks=True)
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
               device: str | torch.device = "cpu", **load_kw) -> list[DetectedFace]:
    """Every face MTCNN finds in a photo with confidence >= ``min_confidence``, largest first.

    Boxes and landmarks are in the photo's pixels (after the EXIF rotation). ``load_kw`` go to
    ``load_photo`` (``max_pixels``, ``min_size``, ``background``).
    """
    return _mtcnn_faces(load_photo(src, **load_kw), detect_size, min_confidence, device)


# ---------------------------------------------------------------------------------------------
# Alignment.


def _chip_transform(template: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [1], t [1]) complex: photo pixel = z * (u + iv) + t for crop point (u, v) in [0, 1]^2."""
    return _attributes._similarity(template.float(), landmarks[None].float())


def _sample(image: Image.Image, z: torch.Tensor, t: torch.Tensor, size: int) -> torch.Tensor:
    """Crop [3, size, size] in [-1, 1]: only the photo's window under the crop becomes a tensor."""
    corners = z * torch.tensor([0, 1, 1j, 1 + 1j], dtype=torch.complex64) + t  # [4] photo pixels
    pad = 2 + math.ceil(float(z.abs()[0]) / size)  # a few photo pixels for interpolation and area
    left = min(max(0, math.floor(float(corners.real.min())) - pad), image.width - 1)
    top = min(max(0, math.floor(float(corners.imag.min())) - pad), image.height - 1)
    right = max(min(image.width, math.ceil(float(corners.real.max())) + pad), left + 1)
    bottom = max(min(image.height, math.ceil(float(corners.imag.max())) + pad), top + 1)
    window = rgb_to_tensor(image.crop((left, top, right, bottom)))  # [1, 3, h, w]
    return _attributes._warp(window, z, t - complex(left, top), size, fill="border")[0].clamp(-1, 1)


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
    both = _attributes.detect_faces(torch.cat([views, views.flip(-1)]), device=device)  # one batch
    back = both.points[k:, _MIRROR].clone()  # the mirrored view's landmarks, mirrored back
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


def align_face(src, *, index: int | None = None, size: int = 64, return_info: bool = False,
               template: torch.Tensor | None = None, detect_size: int = DETECT_SIZE,
               min_confidence: float = MIN_CONFIDENCE, refine: bool = True,
               device: str | torch.device = "cpu", **load_kw):
    """The face in a photo, aligned into the world's crop: ``[3, size, size]`` in [-1, 1].

    ``src``: anything ``load_photo`` takes (``load_kw`` go to it). With several faces, pass
    ``index`` (0 = largest; see ``find_faces``). ``template``: landmark positions ``[5, 2]`` in
    crop fractions (default ``WORLD_TEMPLATE``). ``refine``: find the landmarks again in the
    first crop (with context around it), the way the template was measured. With ``return_info``
    it returns ``(image, info)``:

    - ``box`` [4], ``landmarks`` [5, 2]: the face in the photo's pixels; ``confidence``: MTCNN's;
    - ``transform`` [2, 3]: crop pixel (u, v) (continuous, pixel i covers [i, i + 1)) -> photo
      pixel ``transform @ [u, v, 1]``; ``aligned_landmarks`` [5, 2]: the landmarks in crop pixels;
    - ``faces``: every ``DetectedFace`` found, largest first; ``index``; ``photo_size`` (W, H).
    """
    if not (isinstance(size, numbers.Integral) and size >= 1):
        raise ValueError(f"size must be a positive number of pixels (the crop's side), got {size!r}")
    template = WORLD_TEMPLATE if template is None else torch.as_tensor(template, dtype=torch.float32)
    if template.shape != (5, 2):
        raise ValueError(f"template must be [5, 2] landmark fractions, got shape {list(template.shape)}")
    name = _describe(src)
    image = load_photo(src, **load_kw)
    faces = _mtcnn_faces(image, detect_size, min_confidence, device)
    if not faces:
        raise FaceAlignmentError(f"no face found in {name} ({image.width} x {image.height} px, MTCNN confidence "
                                 f">= {min_confidence}); use a photo with a clearly visible face of at least 20 px, "
                                 f"or lower min_confidence")
    listing = "; ".join(f"{k}: box ({', '.join(f'{v:.0f}' for v in f.box.tolist())}) confidence {f.confidence:.3f}"
                        for k, f in enumerate(faces))
    if index is None and len(faces) > 1:
        raise FaceAlignmentError(f"found {len(faces)} faces in {name}, largest first ({listing}); "
                                 f"pass index=k to choose one (0 = largest)")
    index = 0 if index is None else index
    if not -len(faces) <= index < len(faces):
        raise FaceAlignmentError(f"index={index} but {name} has {len(faces)} face(s) ({listing}); "
                                 f"pass 0 <= index < {len(faces)}")
    face = faces[index]
    z, t = _chip_transform(template, face.landmarks)
    if refine:
        face = _redetect(image, face, z, t, min_confidence, device)
        z, t = _chip_transform(template, face.landmarks)
    out = _sample(image, z, t, size)  # [3, size, size]
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


def align_faces(srcs, *, index: int | None = None, size: int = 64, **kw) -> torch.Tensor:
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


def mirror_landmarks(points: torch.Tensor) -> torch.Tensor:
    """Landmark fractions ``[..., 5, 2]`` of the left-right mirrored face (x -> 1 - x, sides swapped)."""
    flipped = points[..., _MIRROR, :].clone()
    flipped[..., 0] = 1 - flipped[..., 0]
    return flipped


@torch.no_grad()
def measure_template(n: int = 4096, seed: int = 0, *, symmetric: bool = False,
                     min_confidence: float = MIN_CONFIDENCE, batch_size: int = 256,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Mean MTCNN landmarks ``[5, 2]`` of ``n`` teacher faces, as fractions of the 64 px crop.

    The teacher's faces define the world's crop (the world was trained on them). Each face is seen
    with CONTEXT of its side added around it (edge pixels repeated), as ``align_face`` sees the
    faces of photos: facenet-pytorch stretches the part of a candidate box inside the image instead
    of padding it, so a face cut at the chin, like the teacher's, gets landmarks a few pixels off.
    Faces MTCNN misses or finds with confidence < ``min_confidence`` are left out. ``symmetric``
    averages the result with its mirror image. About 30 ms per face on one CPU core.
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
