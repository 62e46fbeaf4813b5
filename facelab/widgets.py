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
        self.view.value = png_bytes(self.image)
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
    data["image/png"] = png_bytes(image)
    data["text/plain"] = text
    return data


class PhotoPicker:
    """Upload a photo, see its face aligned for the world (notebook 05).

    ``align(src) -> [3, R, R]`` in [-1, 1] (e.g. ``world.align``) takes a path or the uploaded bytes;
    ``default``: the photo shown before any upload (a path), so a notebook executed headless has a
    face. Bad photos show the library's one-line error under the upload button, never a traceback,
    and keep the previous face. ``picker.face``: the current aligned face ``[1, 3, R, R]``;
    ``picker.name``: its file name; ``picker.source``: the photo it came from (a path or bytes).
    The aligned image carries the DOM class ``facelab-aligned``.
    """

    def __init__(self, align: Callable[[object], torch.Tensor], default, *, name: str = "", scale: int = 4):
        import ipywidgets as w

        self.align_fn, self.scale = align, scale
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload a photo")
        self.view = w.Image(format="png")
        self.view.add_class("facelab-aligned")
        self.status = w.HTML()
        self.upload.observe(self._uploaded, names="value")
        self.widget = w.VBox([self.upload, w.HBox([self.view, self.status])])
        self.face, self.name, self.source, self.image = None, "", None, None
        if not self.set_photo(default, name or str(default)):
            raise ValueError(f"the default photo has no usable face: {self.status.value}")

    def set_photo(self, src, name: str) -> bool:
        """Align ``src``; on success show it and return True, else show the error and return False."""
        from .faces import FaceAlignmentError
        from .imaging import PhotoError

        try:
            face = self.align_fn(src)
        except (PhotoError, FaceAlignmentError, FileNotFoundError, ValueError) as e:
            self.status.value = f"<span style='color:#b00'><b>{name}</b>: {e}</span>"
            return False
        self.face, self.name, self.source = face[None], name, src
        self.image = to_pil(face.cpu(), scale=self.scale)
        self.view.value = png_bytes(self.image)
        self.status.value = (f"<small><b>{name}</b>: aligned for the world; run the cells below to invert and "
                             "edit it</small>")
        return True

    def _uploaded(self, change) -> None:
        files = change["new"]
        if not files:
            return
        if isinstance(files, dict):  # ipywidgets 7 (Colab's, older labs): {name: {"metadata", "content"}}
            name, f = list(files.items())[-1]
        else:  # ipywidgets 8: a tuple of {"name", "content", ...}
            name, f = files[-1]["name"], files[-1]
        self.set_photo(bytes(f["content"]), name)

    def _repr_mimebundle_(self, **kwargs):
        return _bundle(self.widget, self.image, f"PhotoPicker({self.name})", **kwargs)


def png_bytes(image) -> bytes:
    """A PIL image encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def download_link(image, filename: str = "facelab.png") -> str:
    """HTML for a link that downloads ``image`` (a PIL image) as ``filename`` -- no server round trip."""
    import base64
    import html

    data = base64.b64encode(png_bytes(image)).decode()
    return (f"<a download='{html.escape(filename)}' href='data:image/png;base64,{data}'>"
            f"⬇ download {html.escape(filename)}</a>")
