"""Openly licensed face photos that ship inside installed packages (issue #15).

Claims about real photos rest on the few frontal portraits that packages we can install carry in
their own files (nothing is downloaded). ``facelab/photos.md`` records every package searched and
what it holds; this module returns what is installed, each photo with its source and licence::

    for name, p in sample_photos().items():
        print(name, p.size, p.licence)     # p.image: an RGB PIL image
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class SamplePhoto:
    """One photo: ``image`` (RGB PIL image), the ``package`` that ships it, the file's ``source``
    and its ``licence``."""

    image: Image.Image
    package: str
    source: str
    licence: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _grace_hopper() -> SamplePhoto | None:
    try:
        import matplotlib.cbook
    except ImportError:
        return None
    path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return SamplePhoto(Image.open(path).convert("RGB"), "matplotlib",
                       "mpl-data/sample_data/grace_hopper.jpg: Rear Admiral Grace Hopper, U.S. Navy photograph",
                       "public domain (work of the U.S. federal government)")


def _astronaut() -> SamplePhoto | None:
    try:
        import skimage
    except ImportError:
        return None
    path = Path(skimage.__file__).parent / "data" / "astronaut.png"
    if not path.is_file():
        return None
    return SamplePhoto(Image.open(path).convert("RGB"), "scikit-image",
                       "skimage/data/astronaut.png: Eileen Collins, NASA Great Images database",
                       "public domain (NASA; 'no known copyright restrictions')")


_SOURCES = {"grace_hopper": _grace_hopper, "astronaut": _astronaut}


def sample_photos() -> OrderedDict[str, SamplePhoto]:
    """The installed openly licensed frontal face photos, ``{name: SamplePhoto}`` in a fixed order
    (``grace_hopper`` from matplotlib, ``astronaut`` from scikit-image); a package that is not
    installed is skipped. Images are RGB PIL images of any size (crop them with ``facelab.faces``)."""
    out: OrderedDict[str, SamplePhoto] = OrderedDict()
    for name, load in _SOURCES.items():
        photo = load()
        if photo is not None:
            out[name] = photo
    return out


__all__ = ["SamplePhoto", "sample_photos"]
