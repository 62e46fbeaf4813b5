"""Slider editors render their initial state headless and re-render when a slider moves."""
from __future__ import annotations

import torch

import facelab as fl

from facelab.widgets import SliderEditor


def test_editor_renders_initial_state_and_follows_sliders_and_toggles():
    calls = []

    def render(values, flags):
        calls.append((dict(values), dict(flags)))
        v = values["brightness"] * (-1 if flags["invert"] else 1)
        return torch.full((2, 3, 8, 8), v)

    ed = SliderEditor(render, {"brightness": (-1.0, 1.0, 0.5)}, toggles={"invert": False}, scale=2)
    assert ed.image.size == (2 * (2 * 8 + 3 * 2), 2 * (8 + 2 * 2))  # two tiles side by side, padded, x2
    first = ed.image.getpixel((6, 6))
    ed.sliders["brightness"].value = -1.0
    assert ed.image.getpixel((6, 6))[0] < first[0]
    ed.toggles["invert"].value = True
    assert calls[-1] == ({"brightness": -1.0}, {"invert": True}) and ed.image.getpixel((6, 6))[0] == 255
    ed.reset()
    assert ed.values == {"brightness": 0.5}
    bundle = ed._repr_mimebundle_()
    assert bundle["image/png"].startswith(b"\x89PNG")


def test_any_widget_can_carry_a_png_of_its_current_picture():
    import io

    import ipywidgets as w
    from PIL import Image

    from facelab.widgets import with_picture

    state = {"picture": Image.new("RGB", (4, 4), (255, 0, 0))}
    box = with_picture(w.VBox([w.IntSlider()]), lambda: state["picture"], text="explorer")
    state["picture"] = Image.new("RGB", (6, 6), (0, 0, 255))  # the picture shown is the latest one
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["text/plain"] == "explorer"
    with Image.open(io.BytesIO(bundle["image/png"])) as im:
        assert im.size == (6, 6) and im.getpixel((0, 0)) == (0, 0, 255)


def test_photo_picker_aligns_uploads_and_reports_bad_photos_in_one_line():
    import io

    from PIL import Image

    from facelab.faces import FaceAlignmentError

    def align(src):  # a stand-in for world.align: bytes of a real image -> a 16 px face; else no face
        if src == b"noface":
            raise FaceAlignmentError("no face found in the photo; use a photo with one clear frontal face")
        im = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src).convert("RGB").resize((16, 16))
        return fl.to_tensor(im)[0]

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(buf, format="PNG")
    picker = fl.widgets.PhotoPicker(align, io.BytesIO(buf.getvalue()), name="red.png")
    assert picker.face.shape == (1, 3, 16, 16) and picker.name == "red.png"
    assert "facelab-aligned" in picker.view._dom_classes
    first = picker.view.value
    Image.new("RGB", (40, 40), (10, 10, 200)).save(buf := io.BytesIO(), format="PNG")
    blue = buf.getvalue()
    picker._uploaded({"new": ({"name": "blue.png", "content": memoryview(blue)},)})
    assert picker.name == "blue.png" and picker.view.value != first
    picker._uploaded({"new": ({"name": "cat.png", "content": memoryview(b"noface")},)})
    assert picker.name == "blue.png"  # the previous face stays
    assert "cat.png" in picker.status.value and "no face found" in picker.status.value
    Image.new("RGB", (40, 40), (10, 200, 10)).save(buf := io.BytesIO(), format="PNG")  # ipywidgets 7's value
    picker._uploaded({"new": {"green.png": {"metadata": {"name": "green.png"}, "content": buf.getvalue()}}})
    assert picker.name == "green.png" and "aligned" in picker.status.value
    picker._uploaded({"new": {"blue.png": {"metadata": {"name": "blue.png"}, "content": blue}}})
    bundle = picker._repr_mimebundle_()
    assert "image/png" in bundle and bundle["text/plain"] == "PhotoPicker(blue.png)"
    assert 'download=' in fl.widgets.download_link(picker.image, "x.png")
