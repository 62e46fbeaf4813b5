"""Converting between photos and tensors, and tiling images into grids.

Convention everywhere in facelab: an image batch is a float tensor ``[N, 3, H, W]`` with values in
[-1, 1] (a StyleGAN's output range). PIL images and uint8 arrays are [0, 255].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_tensor(image, *, size: int | None = None) -> torch.Tensor:
    """A PIL image, an ``[H, W, 3]`` uint8 array, or a path -> ``[1, 3, H, W]`` float32 in [-1, 1].

    Grayscale, palette and RGBA images are converted to RGB. ``size`` resizes (Lanczos) to a square.
    """
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            image = im.convert("RGB")
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.LANCZOS)
        array = np.asarray(image)
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an [H, W, 3] image array, got shape {array.shape}")
        if array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array, got {array.dtype}; "
                             "convert with (x * 255).round().astype(np.uint8) or pass a PIL image")
        array = array[..., :3]
        if size is not None and array.shape[:2] != (size, size):
            return to_tensor(Image.fromarray(array), size=size)
    x = torch.from_numpy(array.copy()).permute(2, 0, 1).float()  # [3, H, W] in [0, 255]
    return (x / 127.5 - 1.0).unsqueeze(0)


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
