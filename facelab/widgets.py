"""ipywidgets editors for the notebooks: sliders in, a face out, re-rendered on every change.

Every editor renders its initial state when it is built, so a notebook executed headless (nbval,
nbconvert) shows a real picture instead of an empty widget; the picture is also kept in
``editor.image`` (a PIL image) for tests.

    ed = fl.widgets.SliderEditor(render, {"age": (-3, 3, 0.0), "smile": (-3, 3, 0.0)},
                                 toggles={"conditional": False})
    ed                     # in a notebook cell: sliders + the face

``render(values: dict[str, float], toggles: dict[str, bool]) -> images [N, 3, H, W] in [-1, 1]``;
the images are tiled side by side and enlarged ``scale`` times with crisp pixels.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable

import torch

from .imaging import to_pil


class SliderEditor:
    """Sliders (``name -> (min, max, initial)``) and checkboxes (``name -> initial``) driving ``render``."""

    def __init__(self, render: Callable[[dict, dict], torch.Tensor], sliders: dict[str, tuple[float, float, float]],
                 *, toggles: dict[str, bool] | None = None, step: float | None = None, scale: int = 4,
                 caption: Callable[[dict, dict], str] | None = None):
        import ipywidgets as w

        self.render_fn, self.scale, self.caption_fn = render, scale, caption
        self.sliders = {
            name: w.FloatSlider(value=v, min=lo, max=hi, step=step or (hi - lo) / 60, description=name,
                                continuous_update=True, readout_format=".2f",
                                style={"description_width": "90px"}, layout=w.Layout(width="360px"))
            for name, (lo, hi, v) in sliders.items()
        }
        self.toggles = {name: w.Checkbox(value=v, description=name, indent=False)
                        for name, v in (toggles or {}).items()}
        self.view = w.Image(format="png")
        self.view.add_class("facelab-editor-image")  # DOM hooks for the browser tests (tests/browser)
        self.label = w.HTML()
        reset = w.Button(description="reset", layout=w.Layout(width="80px"))
        reset.on_click(lambda _: self.reset())
        self._initial = {k: s.value for k, s in self.sliders.items()}
        for c in (*self.sliders.values(), *self.toggles.values()):
            c.observe(lambda _: self.update(), names="value")
        controls = w.VBox([*self.sliders.values(), w.HBox([*self.toggles.values(), reset])])
        self.widget = w.HBox([controls, w.VBox([self.view, self.label])])
        self.widget.add_class("facelab-editor")
        self.image = None
        self.update()

    @property
    def values(self) -> dict[str, float]:
        return {k: s.value for k, s in self.sliders.items()}

    @property
    def flags(self) -> dict[str, bool]:
        return {k: t.value for k, t in self.toggles.items()}

    def reset(self) -> None:
        for k, s in self.sliders.items():
            s.value = self._initial[k]

    def update(self) -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            images = self.render_fn(self.values, self.flags)
        if images.ndim == 3:
            images = images[None]
        self.image = to_pil(images.cpu(), nrow=images.shape[0], scale=self.scale)
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        self.view.value = buf.getvalue()
        ms = (time.perf_counter() - t0) * 1000
        text = self.caption_fn(self.values, self.flags) if self.caption_fn else ""
        self.label.value = f"<small>{text} (rendered in {ms:.0f} ms)</small>"

    def _repr_mimebundle_(self, **kwargs):
        """Display as the widget where a widget frontend exists; headless outputs still get the PNG."""
        return _bundle(self.widget, self.image, f"SliderEditor({', '.join(self.sliders)})", **kwargs)


class WithPicture:
    """Any ipywidget plus a PNG of its current picture, for copies of a notebook without a widget frontend.

    An untrusted or static copy (GitHub, nbviewer, a notebook not yet run) shows the PNG instead of
    the text ``VBox(children=...)``; a live JupyterLab shows the widget. ``picture``: a PIL image, or
    a function returning the one to show at display time.
    """

    def __init__(self, widget, picture, *, text: str | None = None):
        self.widget, self.picture, self.text = widget, picture, text

    def _repr_mimebundle_(self, **kwargs):
        picture = self.picture() if callable(self.picture) else self.picture
        return _bundle(self.widget, picture, self.text or type(self.widget).__name__, **kwargs)


def with_picture(widget, picture, *, text: str | None = None) -> WithPicture:
    """``display(fl.widgets.with_picture(box, lambda: last_image))``: see :class:`WithPicture`."""
    return WithPicture(widget, picture, text=text)


def _bundle(widget, image, text: str, **kwargs) -> dict:
    bundle = widget._repr_mimebundle_(**kwargs)
    data = dict((bundle[0] if isinstance(bundle, tuple) else bundle) or {})
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data["image/png"] = buf.getvalue()
    data["text/plain"] = text
    return data
