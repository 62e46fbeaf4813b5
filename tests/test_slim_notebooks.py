"""scripts/slim_notebooks.py: notebook figures re-encoded without changing a pixel."""
from __future__ import annotations

import base64
import importlib.util
import io
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slim_notebooks.py"
spec = importlib.util.spec_from_file_location("slim_notebooks", SCRIPT)
slim = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slim)


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=0)  # as loosely packed as a plotting backend's
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_opaque_rgba_becomes_rgb_with_the_same_pixels_and_fewer_bytes():
    rng = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), 4, 0), 4, 1)  # crisp 4x upscale
    data = png(Image.fromarray(rgb).convert("RGBA"))
    out = slim.slim_png(data)
    assert len(out) < len(data) and Image.open(io.BytesIO(out)).mode == "RGB"
    assert np.array_equal(pixels(out), pixels(data))


def test_transparency_is_kept():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 128
    out = slim.slim_png(png(Image.fromarray(rgba, "RGBA")))
    assert Image.open(io.BytesIO(out)).mode == "RGBA" and np.array_equal(pixels(out), rgba)


def test_notebook_outputs_are_rewritten_and_nothing_else(tmp_path):
    fig = base64.b64encode(png(Image.new("RGBA", (64, 64), (10, 200, 30, 255)))).decode()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plot()", execution_count=3, outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": fig, "text/plain": "<Figure>"})])])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    before, after = slim.slim_notebook(str(path))
    assert after < before
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.execution_count == 3 and cell.source == "plot()"
    assert cell.outputs[0]["data"]["text/plain"] == "<Figure>"
    assert np.array_equal(pixels(base64.b64decode(cell.outputs[0]["data"]["image/png"])),
                          pixels(base64.b64decode(fig)))
