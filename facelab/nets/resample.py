"""FIR up/down-sampling in plain PyTorch (StyleGAN2, Karras et al. 2020, appendix B).

StyleGAN2 resamples with a separable low-pass FIR filter, [1, 3, 3, 1] by default, instead of
nearest-neighbour or bilinear interpolation. Everything here is a handful of ``F.pad`` /
``F.conv2d`` (and ``F.conv_transpose2d``) calls, so it runs unchanged on CPU, CUDA and MPS and needs no
compiled extension.

Conventions (the same as StyleGAN2-ADA's ``upfirdn2d``, so official weights behave identically):
``upfirdn2d`` = insert ``up - 1`` zeros between samples, pad, *convolve* with the filter, keep every
``down``-th sample. Padding is ``(x0, x1, y0, y1)``; negative values crop. Pixels outside the image
are zero.

Also here: :func:`max_pool2d` (and :class:`MaxPool2d`, :func:`faster_pools`), max pooling with
``F.max_pool2d``'s values that runs several times faster on a CPU, for the perception networks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Padding = tuple[int, int, int, int]


def setup_filter(taps=(1, 3, 3, 1), *, device=None) -> torch.Tensor:
    """Normalised 2-D FIR filter ``outer(taps, taps) / sum(...)``: [k, k], float32, sums to 1."""
    f = torch.as_tensor(taps, dtype=torch.float32, device=device)
    f = torch.outer(f, f)  # [k, k]
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, down: int = 1,
              padding: Padding = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the 2-D filter ``f``, downsample.

    x: [N, C, H, W]; f: [k, k]. Returns [N, C, H', W'] with
    ``H' = (H * up + y0 + y1 - k) // down + 1``.
    """
    n, c, h, w = x.shape
    x0, x1, y0, y1 = padding
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])  # zeros after each sample
        x = x.reshape(n, c, h * up, w * up)
    return _pad_fir(x, f, padding, gain=gain, stride=down)


def _pad_fir(x: torch.Tensor, f: torch.Tensor, padding: Padding, *, gain: float = 1.0,
             stride: int = 1) -> torch.Tensor:
    """Pad (negative crops), convolve every channel with ``f``, keep every ``stride``-th sample.

    Symmetric non-negative padding is left to ``F.conv2d`` (no padded copy of a large tensor).
    """
    c = x.shape[1]
    x0, x1, y0, y1 = padding
    if not (x0 == x1 >= 0 and y0 == y1 >= 0):
        x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
        x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
        x0 = y0 = 0
    # F.conv2d correlates; flipping the filter turns that into a convolution.
    k = (f * gain).to(x.dtype).flip([0, 1])[None, None].expand(c, 1, *f.shape)  # [C, 1, k, k]
    return F.conv2d(x, k, groups=c, stride=stride, padding=(y0, x0))


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling: [N, C, H, W] -> [N, C, 2H, 2W], preserving the mean (gain 4)."""
    k = f.shape[0]
    if k % 2 == 0 and f.shape == (k, k):
        # Zero insertion, padding ((k+1)//2, (k-2)//2) and a true convolution are a stride-2
        # transposed convolution cropped by (k-2)//2 per side: no zero-stuffed copy (4x the pixels).
        c = x.shape[1]
        w = (f * 4.0).to(x.dtype)[None, None].expand(c, 1, k, k)  # [C, 1, k, k]
        return F.conv_transpose2d(x, w, stride=2, padding=(k - 2) // 2, groups=c)
    return upfirdn2d(x, f, up=2, padding=((k + 1) // 2, (k - 2) // 2) * 2, gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling: [N, C, H, W] -> [N, C, H/2, W/2], preserving the mean."""
    k = f.shape[0]
    return upfirdn2d(x, f, down=2, padding=((k - 1) // 2, (k - 2) // 2) * 2)


def conv_up2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, *, groups: int = 1,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    """3x3 convolution at twice the resolution: [N, I, H, W] -> [N, O, 2H, 2W].

    Computed as a stride-2 transposed convolution followed by the FIR filter, which is four
    times cheaper than convolving a zero-stuffed image. ``weight``: [O, I / groups, k, k], with
    ``groups`` as in ``F.conv2d`` (output group g sees input group g only: one sample each in
    StyleGAN2's grouped modulated convolution). Like the official implementation, the kernel acts
    as a true convolution here (the transposed convolution is not flipped), which matters when
    loading official weights. ``bias`` [O] is added after the filter.
    """
    o, i_g, kh, kw = weight.shape
    kf = f.shape[0]
    # conv_transpose2d wants [I, O / groups, k, k]: transpose within each group.
    if groups == 1:
        wt = weight.transpose(0, 1)
    else:
        wt = weight.reshape(groups, o // groups, i_g, kh, kw).transpose(1, 2).reshape(groups * i_g, o // groups, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)  # [N, O, 2H + kw - 2, ...]
    # Crop/pad so that the FIR output is exactly 2H x 2W, centred as in the official op.
    p0 = kw // 2 + (kf + 1) // 2 - (kw - 1)
    p1 = kw // 2 + (kf - 2) // 2 - (kw - 2)
    x = _pad_fir(x, f, (p0, p1, p0, p1), gain=4.0)
    # Added in place: a depthwise convolution's own bias makes its backward pass several times slower on a CPU.
    return x if bias is None else x.add_(bias.to(x.dtype).view(1, -1, 1, 1))


def conv_down2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """FIR filter then a stride-2 convolution: [N, I, H, W] -> [N, O, H/2, W/2].

    ``weight``: [O, I, k, k] with k odd (3 or 1), correlated as ``F.conv2d`` does.
    """
    kw = weight.shape[-1]
    kf = f.shape[0]
    if kw == 1:  # filter and decimate first, then the 1x1 projection
        return F.conv2d(downsample2d(x, f), weight)
    p0 = kw // 2 + (kf - 1) // 2
    p1 = kw // 2 + (kf - 2) // 2
    x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
    return F.conv2d(x, weight, stride=2)


def max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, *, ceil_mode: bool = False) -> torch.Tensor:
    """``F.max_pool2d(x, ...)``, value for value (NaN and -inf included), faster on a CPU.

    PyTorch's CPU kernel for a channels-first tensor [N, C, H, W] is several times slower than the
    one for the same tensor in channels_last. A maximum does not depend on the order it is taken in,
    so on a CPU the pool runs on a channels_last copy and comes back in ``x``'s layout, and what
    follows computes exactly what it did; with the two copies, the 3x3 pools of MTCNN, the FER
    mini-Xception and the dlib ResNet run 2 to 7 times faster (``python bench/pooling.py``). Where
    autograd would record the pool, it is ``F.max_pool2d`` itself: between tied maxima the two
    kernels may route the gradient to different pixels.
    """
    fast = (x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last)
            and not (torch.is_grad_enabled() and x.requires_grad))
    if not fast:
        return F.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)
    y = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel_size, stride, padding,
                     ceil_mode=ceil_mode)
    return y.contiguous()


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` through :func:`max_pool2d` (the same values, faster on a CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices or self.dilation not in (1, (1, 1)):
            return super().forward(x)
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode)


def faster_pools(module: nn.Module) -> nn.Module:
    """Replace every ``nn.MaxPool2d`` inside ``module`` by :class:`MaxPool2d` with its settings, in place;
    returns ``module``. For networks built elsewhere (facenet-pytorch's MTCNN)."""
    for name, child in list(module.named_children()):
        if type(child) is nn.MaxPool2d:
            setattr(module, name, MaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                            return_indices=child.return_indices, ceil_mode=child.ceil_mode))
        else:
            faster_pools(child)
    return module
