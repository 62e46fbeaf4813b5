"""Photos and image tensors: loading photos, converting to and from tensors, the image check, grids.

Convention everywhere in facelab: an image batch is a float tensor ``[N, 3, H, W]`` with values in
[-1, 1] (a StyleGAN's output range). PIL images and uint8 arrays are [0, 255].

**The image check** (:func:`check_images`, at every public boundary that takes images): a float
tensor ``[N, 3, H, W]``, finite, with values within ``±IMAGE_LIMIT`` = 4. Generated faces overshoot
[-1, 1] (a psi = 1 sample of world64 reaches beyond ±1.8), so the check does not demand [-1, 1]
itself; 0..255 pixels do not pass, and a tensor whose values all lie in [0, 1] and span more than a
quarter of it gets a warning (it is probably a [0, 1] image, which reads washed out). Where an
image becomes 8-bit pixels (MTCNN, the labelers, :func:`to_uint8`) values beyond [-1, 1] are
clipped. Functions called at every step of an optimisation (the distances of
:mod:`facelab.metrics`) check shapes only: a value check would wait for the device at every step.

**Photos** (:func:`load_photo`): a path, a binary file or bytes, a PIL image, a numpy array
(``[H, W]``, ``[H, W, 1|3|4]``; uint8, uint16, bool, or float in [0, 1]) or a tensor in [-1, 1]
(a tensor photo is pixels: it must lie in [-1, 1] up to rounding). Grayscale, palette, CMYK and
16-bit images are converted to RGB (8 bits per channel, plenty for a 64 px crop; ICC profiles are
not applied); transparent pixels are composited onto ``background`` (white by default;
``background=None`` drops the alpha channel instead, which shows whatever colour the transparent
pixels happen to store); the EXIF orientation is applied, so phone photos come out upright. Files
bigger than ``max_pixels`` (64 megapixels by default) are refused from their header, before any
pixel is decoded, as a guard against decompression bombs; pass ``max_pixels=None`` or a larger
number for a file you trust. Every error is one line that names the cause and the fix:
``FileNotFoundError`` for a missing file, ``PhotoError`` (a ``ValueError``) for a file or array
that is not a usable image.
"""
from __future__ import annotations

import io
import math
import numbers
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .utils import atomic_file, check_finite, finite_extremes

IMAGE_LIMIT = 4.0  # |values| beyond this are not a [-1, 1] image (see the module doc)
PHOTO_LIMIT = 1.001  # a tensor photo is pixels: [-1, 1] up to rounding
DEFAULT_MAX_PIXELS = 64_000_000
MIN_PHOTO_SIZE = 32


def to_tensor(image, *, size: int | None = None, **load_kw) -> torch.Tensor:
    """A photo -> ``[1, 3, H, W]`` float32 in [-1, 1], read by :func:`load_photo`.

    ``image``: a path, encoded bytes or a binary file, a PIL image, or an array ``[H, W]`` /
    ``[H, W, 1|3|4]`` (uint8, uint16, bool, or float in [0, 1]). So 16-bit, gray, palette and CMYK
    images become RGB, alpha is composited onto white, the EXIF orientation is applied, and files
    above 64 megapixels are refused from their header (``load_kw``: ``max_pixels``, ``background``).
    Errors are one line. ``size`` resizes (Lanczos) to a square.
    """
    if size is not None and not (isinstance(size, numbers.Integral) and size >= 1):
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    im = load_photo(image, min_size=1, **load_kw)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.LANCZOS)
    return rgb_to_tensor(im)


def rgb_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> ``[1, 3, H, W]`` float32 in [-1, 1], as it is (use :func:`to_tensor` for photos)."""
    x = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).float()  # [3, H, W]
    return (x / 127.5 - 1.0).unsqueeze(0)


# ---------------------------------------------------------------------------------------------
# Photos


class PhotoError(ValueError):
    """The input is not a usable image (unreadable, too small, too large, wrong array format)."""


def describe_photo(src) -> str:
    """How an error message names a photo source (its path or file name, else its type and shape)."""
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


def no_photo(src: str | Path) -> FileNotFoundError:
    """The one-line error for a photo path that does not exist (the CLI checks its paths with it first)."""
    where = "" if Path(src).expanduser().is_absolute() else f" (looked in {Path.cwd()})"
    return FileNotFoundError(f"no photo at {src}{where}; check the path and the file name")


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
    name = describe_photo(src)
    if isinstance(src, (str, Path)):
        path = Path(src).expanduser()
        if not path.exists():
            raise no_photo(src)
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
        check_image_values(x, f"{name} (a tensor photo)", limit=PHOTO_LIMIT, error=PhotoError)
        im = Image.fromarray(to_uint8(x))
    else:
        raise PhotoError(f"cannot use {name} as a photo; pass a path, a PIL image, a numpy array or a tensor")
    if min(im.size) < min_size:
        raise PhotoError(f"{name} is only {im.width} x {im.height} px; photos need at least {min_size} px on "
                         f"the short side (MTCNN finds faces from about 20 px): use a larger photo")
    return rgb_to_tensor(im) if as_tensor else im


# ---------------------------------------------------------------------------------------------
# Tensors


def check_images(images, what: str = "images", *, channels: int = 3, square: bool = False, nonempty: bool = False,
                 values: bool = True, who: str = "", error: type[Exception] = ValueError) -> torch.Tensor:
    """The image check of facelab's public boundaries (module doc); returns ``images``.

    ``images`` must be a float tensor ``[N, channels, H, W]`` (``square``: H == W; ``nonempty``:
    N >= 1) and, with ``values``, pass :func:`check_image_values`. A non-tensor is a ``TypeError``,
    anything else a one-line ``error`` naming ``what`` (prefixed with ``who:`` when given) and the fix.
    """
    name = f"{who}: {what}" if who else what
    form = f"[N, {channels}, H, W] in [-1, 1]"
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a float tensor {form}, got {type(images).__name__}; "
                        "convert photos with facelab.to_tensor")
    if not images.is_floating_point():
        raise error(f"{name} must be a float tensor {form}, got {images.dtype}; convert photos with facelab.to_tensor")
    if images.ndim != 4 or images.shape[1] != channels or (nonempty and images.shape[0] < 1):
        hint = f" (add the batch axis: {what}[None])" if images.ndim == 3 else ""
        raise error(f"{name} must be {form}, got shape {list(images.shape)}{hint}")
    if square and images.shape[2] != images.shape[3]:
        raise error(f"{name} must be square [N, {channels}, S, S], got {images.shape[2]}x{images.shape[3]}; "
                    "crop or align the face first")
    if values:
        check_image_values(images, name, error=error)
    return images


def check_image_values(images: torch.Tensor, what: str = "images", *, limit: float = IMAGE_LIMIT,
                       error: type[Exception] = ValueError) -> None:
    """The value part of :func:`check_images`: finite and within ``±limit``; a warning for [0, 1] images.

    Raises a one-line ``error`` for NaN or Inf, or for values beyond ``±limit``, and warns when the
    values all lie in [0, 1] and span more than a quarter of it (probably a [0, 1] image).
    """
    if images.numel() == 0:
        return
    extremes = finite_extremes(images)
    if extremes is None:  # raises, naming what is not finite
        check_finite(images, what, fix="images must be finite, in [-1, 1]: check what produced them", error=error)
    lo, hi = extremes
    if lo < -limit or hi > limit:
        raise error(f"{what} must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; for 0..255 pixels use "
                    "x / 127.5 - 1 (or facelab.to_tensor)")
    if 0 <= lo and hi <= 1 and hi - lo > 0.25:
        warnings.warn(f"{what} lie in [{lo:.3g}, {hi:.3g}], like an image in [0, 1]; facelab's images are in "
                      "[-1, 1] (a [0, 1] image reads washed out): convert with x * 2 - 1", UserWarning, stacklevel=3)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` or ``[3, H, W]`` in [-1, 1] -> uint8 array ``[N, H, W, 3]`` (or ``[H, W, 3]``)."""
    x = images.detach().float().cpu()
    x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(*range(x.ndim - 3), -2, -1, -3).numpy()


def _check_showable(images: torch.Tensor) -> None:
    """What :func:`to_pil` would silently turn black (NaN) or white (0..255 pixels) is refused in one line; a
    generator's raw output may overshoot [-1, 1], far at a far edit, and is shown clamped."""
    if images.numel() == 0:
        return
    extremes = finite_extremes(images)
    if extremes is None:
        check_finite(images, "images", fix="images must be finite, in [-1, 1]: check what produced them")
    lo, hi = extremes
    if lo >= 0 and hi > IMAGE_LIMIT:
        raise ValueError(f"images lie in [{lo:.3g}, {hi:.3g}], like 0..255 pixels; facelab's images are in [-1, 1]: "
                         "convert with x / 127.5 - 1 (or facelab.to_tensor)")


def to_pil(images: torch.Tensor, *, nrow: int | None = None, scale: int = 1) -> Image.Image:
    """One image ``[3, H, W]``/``[1, 3, H, W]``, or a batch tiled into a grid, as a PIL image.

    ``scale`` enlarges by an integer factor with nearest-neighbour (crisp pixels for 64 px faces).
    """
    _check_showable(images)
    if images.ndim == 4 and images.shape[0] > 1:
        images = make_grid(images, nrow=nrow)
    elif images.ndim == 4:
        images = images[0]
    pil = Image.fromarray(to_uint8(images))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def make_grid(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``[N, C, H, W]`` into one ``[C, H', W']`` image, ``nrow`` images per row (default ~sqrt N)."""
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [N, C, H, W], got {list(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = images.new_full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def grid_tiles(grid, size: int, *, padding: int = 2) -> torch.Tensor:
    """The images of a grid written by :func:`make_grid` (or by :func:`save_image` at an integer ``scale``),
    ``[rows * cols, C, size, size]`` row by row. ``grid``: ``[C, H', W']`` in [-1, 1], or a PIL image or
    a PNG path; ``size``: the tiles' side before scaling. Lets a notebook label or compare the tiles of a
    figure that ships as a PNG."""
    if not isinstance(grid, torch.Tensor):
        grid = to_tensor(grid)[0]
    step = size + padding

    def fits(n: int, scale: int) -> bool:  # n pixels = scale * (k tiles and their padding), k >= 1
        return n % scale == 0 and n // scale > padding and (n // scale - padding) % step == 0

    height, width = grid.shape[-2:]
    scale = next((k for k in range(1, min(height, width) + 1) if fits(height, k) and fits(width, k)), None)
    if scale is None:
        raise ValueError(f"a {height} x {width} px grid is not made of {size} px tiles with {padding} px padding "
                         "at an integer scale; pass the tiles' side before scaling")
    grid = grid[:, ::scale, ::scale]  # save_image's scaling repeated each pixel scale x scale times
    tops, lefts = ([padding + k * step for k in range((n // scale - padding) // step)] for n in (height, width))
    return torch.stack([grid[:, top:top + size, left:left + size] for top in tops for left in lefts])


def save_image(images: torch.Tensor, path: str | Path, *, nrow: int | None = None, scale: int = 1) -> Path:
    """Save an image or a grid of a batch in the format its suffix names (``.png``, ``.jpg`` at quality 95,
    ``.webp``, ...), atomically: written to a temp file, then renamed."""
    path = Path(path)
    kind = Image.registered_extensions().get(path.suffix.lower())
    if kind is None or kind not in Image.SAVE:
        raise ValueError(f"cannot tell which image format {path.name!r} asks for; name it .png (or .jpg, .webp, ...)")
    pil = to_pil(images, nrow=nrow, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:  # a full disk or a Ctrl-C mid-write leaves nothing in the user's folder
        pil.save(f, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
    return path


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size`` x ``size`` (area when shrinking, bilinear when enlarging)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kw)
