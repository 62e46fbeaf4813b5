"""Figures for the notebooks: labelled image grids with crisp, exactly scaled pixels."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .imaging import make_grid, to_uint8


def axes_row(n: int, width_px: int, height_px: int, gap_px: int = 90):
    """A figure with ``n`` axes side by side, each exactly ``width_px`` x ``height_px`` (at 100 dpi)."""
    import matplotlib.pyplot as plt

    total = n * width_px + (n - 1) * gap_px
    fig = plt.figure(figsize=(total / 100, height_px / 100), dpi=100)
    return [fig.add_axes([i * (width_px + gap_px) / total, 0, width_px / total, 1]) for i in range(n)]


def show(images: torch.Tensor, nrow: int, *, title: str | None = None, row_labels: Sequence[str] = (),
         col_labels: Sequence[str] = (), scale: int = 2, ax=None):
    """Draw images [N, 3, H, W] in [-1, 1] as a grid, ``nrow`` per row, each pixel ``scale`` x ``scale``.

    Row and column labels are placed at the centre of each tile. Returns the matplotlib axes.
    """
    grid = to_uint8(make_grid(images.detach().cpu(), nrow=nrow))  # [H', W', 3] uint8
    ax = ax or axes_row(1, grid.shape[1] * scale, grid.shape[0] * scale)[0]
    ax.imshow(grid, interpolation="nearest")
    step = images.shape[-1] + 2  # make_grid pads by 2 px
    ax.set_xticks([1 + step * (i + 0.5) for i in range(len(col_labels))], list(col_labels))
    ax.set_yticks([1 + step * (i + 0.5) for i in range(len(row_labels))], list(row_labels))
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(length=0, labelsize=9)
    ax.spines[:].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def labelled_line(ax, x: Sequence[float], y: Sequence[float], labels: Sequence[str], *, fontsize: int = 8, **plot_kw):
    """Plot points ``(x[i], y[i])`` joined in order, each annotated with ``labels[i]`` (e.g. one point per
    setting of a knob, as in a tradeoff curve): above and below the point in turn, so that neighbouring
    points' labels overlap less; where points crowd, :func:`spread_labels` (once the axes are complete)
    moves them apart. ``plot_kw`` go to ``ax.plot`` (``marker="o"`` by default). Returns the line."""
    if not (len(x) == len(y) == len(labels)):
        raise ValueError(f"labelled_line needs as many labels as points, "
                         f"got {len(x)} x, {len(y)} y, {len(labels)} labels")
    plot_kw.setdefault("marker", "o")
    (line,) = ax.plot(list(x), list(y), **plot_kw)
    for i, (xi, yi, text) in enumerate(zip(x, y, labels)):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(5, 3) if i % 2 == 0 else (5, -3),
                    va="bottom" if i % 2 == 0 else "top", fontsize=fontsize, color=line.get_color(), zorder=4,
                    gid=f"{_GROUP}:{id(line)}")
    return line


_GROUP = "facelab.labelled_line"  # the gid of labelled_line's labels, so spread_labels knows them by their line


def spread_labels(ax, *, gap_pt: float = 12.0) -> int:
    """Make the point labels on ``ax`` legible once the axes are complete (limits fixed), before the
    figure is shown. Each :func:`labelled_line`'s labels stay where they are if none of them covers a
    label, a marker, the legend or the axes' edge, or sits nearer another point than its own; otherwise
    they are stacked beside their points in the points' vertical order, each joined to its point by a
    thin line (each beside its own point, right or left, else in one column beside them all). Other
    annotations in offset points (a single point's label) keep their place or take the nearest free
    one. Returns how many labels still overlap something."""
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.draw_without_rendering()  # fixes the limits and the layout, so pixel positions are final
    renderer = fig.canvas.get_renderer()
    markers = _markers(ax)
    frame = ax.get_window_extent(renderer)
    placed = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y, r in markers]
    if ax.get_legend() is not None:
        placed.append(ax.get_legend().get_window_extent(renderer))

    def clashes(texts) -> int:
        boxes = [_text_box(t, renderer) for t in texts]
        n = 0
        for i, (t, box) in enumerate(zip(texts, boxes)):
            own = _distance(box, *ax.transData.transform(t.xy))
            lonely = t.arrow_patch is None and any(_distance(box, x, y) < own - 0.5 for x, y, _ in markers)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            n += any(box.overlaps(o) for o in placed + boxes[:i]) or lonely or not inside
        return n

    texts = [t for t in ax.texts if isinstance(t, Annotation) and t.anncoords == "offset points"]
    groups: dict[str, list] = {}
    for t in texts:
        groups.setdefault(t.get_gid() if (t.get_gid() or "").startswith(_GROUP) else str(id(t)), []).append(t)
    crowded = 0
    for group in groups.values():
        if clashes(group) and len(group) > 1:  # a crowded line: its labels stacked beside it, with lines
            options = []  # (clashes, stacked labels), tried in order until one is clear
            for side, aligned in ((1, False), (-1, False), (1, True), (-1, True)):
                stack = [_add_leader(ax, t) for t in group]
                _stack(ax, stack, side, gap_pt, renderer, aligned=aligned)
                options.append((clashes(stack), stack))
                if options[-1][0] == 0:
                    break
            best = min(options, key=lambda o: o[0])[1]  # the first of the fewest clashes
            for t in group + [t for _, stack in options if stack is not best for t in stack]:
                t.remove()
            group = best
        elif clashes(group):  # a single label: the nearest free place around its point
            t = group[0]
            for dx, dy in [(5, 3), (5, -11), (-5, 3), (-5, -11), (8, -4), (-8, -4)]:
                t.xyann = (dx, dy)
                t.set(ha="left" if dx > 0 else "right", va="bottom")
                if not clashes(group):
                    break
        crowded += clashes(group)
        placed += [_text_box(t, renderer) for t in group]
    return crowded


def _stack(ax, texts, side: int, gap_pt: float, renderer, *, aligned: bool) -> None:
    """Place ``texts`` (annotations of points) ``gap_pt`` points to the right (``side`` 1) or left (-1)
    of their points, in the points' vertical order, each as near its point's height as the text heights
    allow, kept inside the axes: each beside its own point, or all ``aligned`` in one column beside the
    outermost point."""
    to_px = ax.figure.dpi / 72
    xy = ax.transData.transform([t.xy for t in texts])
    order = np.argsort(-xy[:, 1])  # top first
    heights = [_text_box(texts[i], renderer).height + 1 for i in order]
    y = xy[order, 1].copy()
    for k in range(1, len(y)):  # push each label below the one above it
        y[k] = min(y[k], y[k - 1] - (heights[k - 1] + heights[k]) / 2)
    y += (xy[:, 1].mean() - y.mean())  # centre the column on the points
    frame = ax.get_window_extent(renderer)
    y += max(0.0, frame.y0 + heights[-1] - y[-1]) - max(0.0, y[0] + heights[0] - frame.y1)
    edge = xy[:, 0].max() if side > 0 else xy[:, 0].min()
    for k, i in enumerate(order):
        x = (edge if aligned else xy[i, 0]) + side * gap_pt * to_px
        texts[i].xyann = ((x - xy[i, 0]) / to_px, (y[k] - xy[i, 1]) / to_px)
        texts[i].set(ha="left" if side > 0 else "right", va="center")


def _markers(ax) -> list[tuple[float, float, float]]:
    """The markers on ``ax`` (the points of its lines and scatters) as pixel centres and radii."""
    from matplotlib.collections import PathCollection

    to_px = ax.figure.dpi / 72
    centres_radii = []
    for line in ax.get_lines():
        if line.get_marker() not in (None, "", "None", " "):
            r = line.get_markersize() * to_px / 2
            centres_radii += [(p, r) for p in ax.transData.transform(line.get_xydata())]
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and len(coll.get_offsets()):
            sizes = coll.get_sizes() if len(coll.get_sizes()) else [36.0]
            points = coll.get_offset_transform().transform(coll.get_offsets())
            centres_radii += [(p, sizes[i % len(sizes)] ** 0.5 * to_px / 2) for i, p in enumerate(points)]
    return [(float(x), float(y), r) for (x, y), r in centres_radii]


def _text_box(text, renderer):
    """The pixel box of an annotation's text alone (its line left out), padded by a pixel."""
    from matplotlib.text import Text

    text.update_positions(renderer)  # an annotation places its text from its offset when drawn
    return Text.get_window_extent(text, renderer).padded(1.0)


def _distance(box, x: float, y: float) -> float:
    """The distance in pixels from the point (x, y) to the box (0 inside it)."""
    return float(np.hypot(max(box.x0 - x, 0.0, x - box.x1), max(box.y0 - y, 0.0, y - box.y1)))


def _add_leader(ax, text):
    """A copy of the annotation ``text`` drawn with a thin line from its point to the text (matplotlib
    draws an annotation's line only if it is made with one). Returns the copy."""
    return ax.annotate(text.get_text(), text.xy, xytext=text.xyann, textcoords="offset points", ha=text.get_ha(),
                       va=text.get_va(), fontsize=text.get_fontsize(), color=text.get_color(), gid=text.get_gid(),
                       zorder=text.get_zorder(), arrowprops=dict(arrowstyle="-", lw=0.5, color=text.get_color(),
                                                                 shrinkA=2, shrinkB=4))


def difference(images: torch.Tensor, reference: torch.Tensor, *, gain: float = 4.0) -> torch.Tensor:
    """Where ``images`` differ from ``reference`` (both [N, 3, H, W] in [-1, 1], or a reference [1, ...]
    for all): the mean absolute difference over the colour channels as a fraction of the full range,
    multiplied by ``gain``, as grey images in [-1, 1] to :func:`show` beside them (black: unchanged;
    white: changed by 1/gain of the range or more). Edits too small to see side by side show up here."""
    if images.shape[-3:] != reference.shape[-3:]:
        raise ValueError(f"difference needs images of one shape, got {list(images.shape)} and {list(reference.shape)}")
    d = ((images - reference).abs().mean(-3, keepdim=True) / 2 * gain).clamp(0, 1)
    return (d * 2 - 1).expand(*d.shape[:-3], 3, *d.shape[-2:])
