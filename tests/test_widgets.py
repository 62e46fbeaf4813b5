"""Slider editors render their initial state headless and re-render when a slider moves."""
from __future__ import annotations

import torch

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
