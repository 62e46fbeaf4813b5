"""Converting between photos and tensors, and tiling images into grids.

Convention everywhere in facelab: an image batch is a float tensor ``[N, 3, H, W]`` with values in
[-1, 1] (a StyleGAN's output range). PIL images and uint8 arrays are [0, 255].
"""
from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_tensor(image, *, size: int | None = None, **load_kw) -> torch.Tensor:
    """A photo -> ``[1, 3, H, W]`` float32 in [-1, 1], read by :func:`facelab.faces.load_photo`.

    ``image``: a path, encoded bytes or a binary file, a PIL image, or an array ``[H, W]`` /
    ``[H, W, 1|3|4]`` (uint8, uint16, bool, or float in [0, 1]). So 16-bit, gray, palette and CMYK
    images become RGB, alpha is composited onto white, the EXIF orientation is applied, and files
    above 64 megapixels are refused from their header (``load_kw``: ``max_pixels``, ``background``).
    Errors are one line. ``size`` resizes (Lanczos) to a square.
    """
    from .faces import load_photo  # faces builds on this module

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


def check_image_values(images: torch.Tensor, what: str = "images", *, limit: float = 4.0,
                       error: type[Exception] = ValueError) -> None:
    """The one value check of images meant to be in [-1, 1], at facelab's public boundaries.

    Raises a one-line ``error`` for NaN or Inf, or for values beyond ``±limit`` (generated images
    overshoot [-1, 1] a little; 0..255 pixels do not), and warns when the values all lie in [0, 1]
    and span more than a quarter of it: such a tensor is probably a [0, 1] image, which reads washed out.
    """
    from .utils import check_finite

    check_finite(images, what, fix="images must be finite, in [-1, 1]: check what produced them", error=error)
    if images.numel() == 0:
        return
    lo, hi = float(images.min()), float(images.max())
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


def to_pil(images: torch.Tensor, *, nrow: int | None = None, scale: int = 1) -> Image.Image:
    """One image ``[3, H, W]``/``[1, 3, H, W]``, or a batch tiled into a grid, as a PIL image.

    ``scale`` enlarges by an integer factor with nearest-neighbour (crisp pixels for 64 px faces).
    """
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


def save_image(images: torch.Tensor, path: str | Path, *, nrow: int | None = None, scale: int = 1) -> Path:
    """Save an image or a grid of a batch as PNG (atomically: written to a temp file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    to_pil(images, nrow=nrow, scale=scale).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size`` x ``size`` (area when shrinking, bilinear when enlarging)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kw)
