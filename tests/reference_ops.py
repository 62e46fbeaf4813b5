"""Slow, plainly written references for the tests. They do not import facelab.

Each one states its alignment convention in its docstring, so a test that compares facelab
against one of them compares two separate derivations, not the code with a copy of itself.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fir(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], *, gain: float = 1.0,
        stride: int = 1) -> torch.Tensor:
    """Depthwise 2-D *convolution* with ``f`` after zero padding ``pad = (left, right, top, bottom)``.

    F.conv2d correlates, so the kernel is flipped first. x: [N, C, H, W]; f: [k, k].
    """
    c = x.shape[1]
    k = (f * gain).flip([0, 1]).to(x.dtype).expand(c, 1, *f.shape)
    return F.conv2d(F.pad(x, list(pad)), k, groups=c, stride=stride)


def zero_stuff(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W] with x at the even positions and zeros elsewhere."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return up


def conv_up2_ref(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """3x3 true convolution at twice the resolution, for the 4-tap filter: [N, I, H, W] -> [N, O, 2H, 2W].

    Alignment: 2x FIR upsampling with a 4-tap filter pads the zero-stuffed image by (2, 1) (the
    output pixels then sit at -1/4 and +1/4 of an input pixel, like bilinear with half-pixel
    centres), and a centred 3x3 convolution adds 1 on each side, so the combined operator pads by
    (3, 2). A *full* convolution already pads by k - 1 = 2 on each side, which leaves (1, 0) for
    the blur. Border values of the full convolution are kept (never cropped between the two
    filters), which is what makes the two orders of filtering agree exactly.
    """
    assert weight.shape[-1] == 3 and f.shape[0] == 4, "alignment derived for k=3 and a 4-tap filter"
    y = F.conv2d(zero_stuff(x), weight.flip([2, 3]), padding=2)  # full true conv: [N, O, 2H + 2, 2W + 2]
    return fir(y, f, (1, 0, 1, 0), gain=4.0)  # [N, O, 2H, 2W]


def conv_down2_ref(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Centred kxk correlation (k in {1, 3}) then 2x FIR downsampling, for the 4-tap filter.

    Alignment: 2x FIR downsampling with a 4-tap filter pads by (1, 1) (output pixel j centred
    between input pixels 2j and 2j+1) and a centred kxk correlation adds k // 2 per side. The full
    correlation (padding k - 1) covers that when k = 3, leaving no padding for the blur; for k = 1
    the blur keeps its (1, 1).
    """
    k = weight.shape[-1]
    assert k in (1, 3) and f.shape[0] == 4
    y = F.conv2d(x, weight, padding=k - 1)  # full correlation: [N, O, H + k - 1, W + k - 1]
    p = 0 if k == 3 else 1
    return fir(y, f, (p, p, p, p), stride=2)


def modulated_conv2d_ref(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                         demodulate: bool = True, up: bool = False, f: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN2 eq. 1-3 literally: one modulated (and demodulated) kernel per sample.

    x: [N, I, H, W]; weight: [O, I, k, k]; styles: [N, I].
    """
    w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    if demodulate:
        w = w / (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).sqrt()
    out = []
    for n in range(x.shape[0]):
        if up:
            out.append(conv_up2_ref(x[n:n + 1], w[n], f))
        else:
            out.append(F.conv2d(x[n:n + 1], w[n], padding=weight.shape[-1] // 2))
    return torch.cat(out)


def np_upfirdn(x: np.ndarray, taps, *, up: int, down: int, pad: tuple[int, int, int, int],
               gain: float = 1.0) -> np.ndarray:
    """One channel [H, W] in float64 with numpy only, for a separable filter outer(taps, taps) / sum^2.

    Insert up - 1 zeros after every sample, pad (negative crops), keep the 'valid' part of the
    true convolution (np.convolve), keep every down-th sample.
    """
    t = np.asarray(taps, dtype=np.float64)
    t = t / t.sum()
    k = len(t)
    h, w = x.shape
    y = np.zeros((h * up, w * up))
    y[::up, ::up] = x
    x0, x1, y0, y1 = pad
    y = np.pad(y, ((max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    y = y[max(-y0, 0): y.shape[0] - max(-y1, 0), max(-x0, 0): y.shape[1] - max(-x1, 0)]

    def valid_conv_1d(v):
        return np.convolve(v, t, mode="full")[k - 1: len(v)]

    y = np.apply_along_axis(valid_conv_1d, 1, y)
    y = np.apply_along_axis(valid_conv_1d, 0, y)
    return gain * y[::down, ::down]
