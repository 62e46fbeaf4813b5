"""Figures for the notebooks: labelled image grids with crisp, exactly scaled pixels."""
from __future__ import annotations

from collections.abc import Sequence

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
    points' labels overlap less. ``plot_kw`` go to ``ax.plot`` (``marker="o"`` by default). Returns the line."""
    if not (len(x) == len(y) == len(labels)):
        raise ValueError(f"labelled_line needs as many labels as points, got {len(x)} x, {len(y)} y, {len(labels)} labels")
    plot_kw.setdefault("marker", "o")
    (line,) = ax.plot(list(x), list(y), **plot_kw)
    for i, (xi, yi, text) in enumerate(zip(x, y, labels)):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(5, 3) if i % 2 == 0 else (5, -3),
                    va="bottom" if i % 2 == 0 else "top", fontsize=fontsize, color=line.get_color(), zorder=4)
    return line


def difference(images: torch.Tensor, reference: torch.Tensor, *, gain: float = 4.0) -> torch.Tensor:
    """Where ``images`` differ from ``reference`` (both [N, 3, H, W] in [-1, 1], or a reference [1, ...]
    for all): the mean absolute difference over the colour channels as a fraction of the full range,
    multiplied by ``gain``, as grey images in [-1, 1] to :func:`show` beside them (black: unchanged;
    white: changed by 1/gain of the range or more). Edits too small to see side by side show up here."""
    if images.shape[-3:] != reference.shape[-3:]:
        raise ValueError(f"difference needs images of one shape, got {list(images.shape)} and {list(reference.shape)}")
    d = ((images - reference).abs().mean(-3, keepdim=True) / 2 * gain).clamp(0, 1)
    return (d * 2 - 1).expand(*d.shape[:-3], 3, *d.shape[-2:])
