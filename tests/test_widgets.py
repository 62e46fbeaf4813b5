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
