"""FIR resampling (facelab/nets/resample.py) against numpy, bilinear interpolation and slow references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch import nn

from facelab.nets.resample import (MaxPool2d, conv_down2, conv_up2, downsample2d, faster_pools, max_pool2d,
                                  setup_filter, upfirdn2d, upsample2d)
from reference_ops import conv_down2_ref, conv_up2_ref, fir, np_upfirdn, zero_stuff


@pytest.fixture
def f():
    return setup_filter()  # [1, 3, 3, 1] outer product, sums to 1


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_setup_filter_is_normalised_and_symmetric(f):
    assert f.shape == (4, 4)
    assert torch.isclose(f.sum(), torch.tensor(1.0))
    assert torch.equal(f, f.t()) and torch.equal(f, f.flip([0, 1]))


@pytest.mark.parametrize("op, size", [(upsample2d, 32), (downsample2d, 8)])
def test_constant_image_stays_constant_away_from_borders(f, op, size):
    x = torch.full((2, 3, 16, 16), 0.7)
    y = op(x, f)
    assert y.shape == (2, 3, size, size)
    # The filter preserves DC (sums to 1, upsampling gain 4 = the zero-stuffing loss); pixels
    # outside the image are zeros, so only the border pixels darken.
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.7))
    assert (y[..., 0, :] < 0.7 - 1e-3).all()


def test_upsample2d_is_bilinear_with_half_pixel_centres_in_the_interior(f):
    # [1, 3, 3, 1] upsampling puts output pixels 2i and 2i+1 at i -/+ 1/4: exactly the weights
    # (3/4, 1/4) of bilinear interpolation with align_corners=False. Borders differ (zeros vs clamp).
    x = rand(2, 3, 8, 8)
    ours = upsample2d(x, f)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-6, rtol=0)
    assert not torch.allclose(ours[..., 0, :], ref[..., 0, :], atol=1e-3)


def test_downsample2d_is_the_adjoint_of_upsample2d(f):
    # <U x, y> = 4 <x, D y> exactly, borders included, if both use the same centring and zero padding.
    x = rand(2, 3, 8, 8, seed=1, dtype=torch.float64)
    y = rand(2, 3, 16, 16, seed=2, dtype=torch.float64)
    f64 = f.double()
    lhs = (upsample2d(x, f64) * y).sum()
    rhs = 4 * (x * downsample2d(y, f64)).sum()
    torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=1e-10)


def test_upfirdn2d_convolves_not_correlates():
    # The impulse response of a true convolution is the filter itself (a correlation would flip it).
    taps = (1.0, 2.0, 5.0)  # asymmetric
    f = setup_filter(taps)
    k = f.shape[0]
    delta = torch.ones(1, 1, 1, 1)
    out = upfirdn2d(delta, f, padding=(k - 1,) * 4)
    torch.testing.assert_close(out[0, 0], f)


@pytest.mark.parametrize("up, down, padding", [
    (1, 1, (0, 0, 0, 0)),
    (2, 1, (2, 1, 2, 1)),
    (1, 2, (1, 1, 1, 1)),
    (2, 2, (3, 0, 1, 2)),
    (1, 1, (-1, 2, 3, -2)),  # negative padding crops
    (3, 2, (0, 4, 2, 2)),
])
def test_upfirdn2d_matches_numpy_and_its_size_formula(up, down, padding):
    taps = (1.0, 2.0, 5.0, 3.0)  # asymmetric, so any flip or shift shows up
    t = torch.tensor(taps, dtype=torch.float64)
    f = torch.outer(t, t) / t.sum() ** 2  # float64 (setup_filter is float32)
    torch.testing.assert_close(setup_filter(taps), f.float())
    k = f.shape[0]
    h, w = 7, 9
    x = rand(1, 2, h, w, seed=3, dtype=torch.float64)
    out = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.5)
    x0, x1, y0, y1 = padding
    expected_h = (h * up + y0 + y1 - k) // down + 1  # the formula in the docstring
    expected_w = (w * up + x0 + x1 - k) // down + 1
    assert out.shape == (1, 2, expected_h, expected_w)
    for c in range(2):
        ref = np_upfirdn(x[0, c].numpy(), taps, up=up, down=down, pad=padding, gain=1.5)
        np.testing.assert_allclose(out[0, c].numpy(), ref, atol=1e-12)


def test_conv_up2_equals_zero_insertion_then_true_convolution_then_blur(f):
    x = rand(2, 5, 6, 6, seed=4)
    weight = rand(7, 5, 3, 3, seed=5)  # asymmetric kernels: a flip would be caught
    ours = conv_up2(x, weight, f)
    assert ours.shape == (2, 7, 12, 12)
    torch.testing.assert_close(ours, conv_up2_ref(x, weight, f), atol=1e-5, rtol=0)
    # The same operator with the filters in the other order (StyleGAN2-ADA's generic path):
    # FIR-upsample with total padding (3, 2), then a valid true 3x3 convolution.
    other = F.conv2d(fir(zero_stuff(x), f, (3, 2, 3, 2), gain=4.0), weight.flip([2, 3]))
    torch.testing.assert_close(ours, other, atol=1e-5, rtol=0)
    # The test is sensitive to the kernel orientation: a correlation does not match.
    assert not torch.allclose(ours, conv_up2_ref(x, weight.flip([2, 3]), f), atol=1e-3)


def test_conv_up2_of_a_1x1_kernel_is_channel_mixing_then_upsample2d(f):
    x = rand(1, 4, 5, 5, seed=6)
    weight = rand(3, 4, 1, 1, seed=7)
    # A 1x1 conv commutes with spatial filtering.
    ref = upsample2d(F.conv2d(x, weight), f)
    torch.testing.assert_close(conv_up2(x, weight, f), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [3, 1])
def test_conv_down2_equals_blur_then_strided_conv(f, k):
    x = rand(2, 5, 16, 16, seed=8)
    weight = rand(6, 5, k, k, seed=9)
    ours = conv_down2(x, weight, f)
    assert ours.shape == (2, 6, 8, 8)
    # Blur first (padding (2, 2) for k=3: downsample2d's (1, 1) plus 1 for the centred 3x3;
    # (1, 1) for k=1), then a stride-2 valid correlation.
    p = 2 if k == 3 else 1
    blur_first = F.conv2d(fir(x, f, (p, p, p, p)), weight, stride=2)
    torch.testing.assert_close(ours, blur_first, atol=1e-5, rtol=0)
    # And in the other order: full correlation, then decimating blur.
    torch.testing.assert_close(ours, conv_down2_ref(x, weight, f), atol=1e-5, rtol=0)


def awkward(*shape, seed=0):
    """Random values with NaNs, -inf and runs of tied zeros (as after a ReLU) in them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    u = torch.rand(*shape, generator=g)
    x = x.masked_fill(u < 0.3, 0.0).masked_fill(u > 0.97, float("nan"))
    return x.masked_fill((u > 0.94) & (u <= 0.97), -math.inf)


@pytest.mark.parametrize("k, s, p, ceil", [(2, 2, 0, True), (3, 2, 0, True), (3, 2, 0, False), (3, 2, 1, False),
                                           (2, 1, 0, False)])
def test_max_pool2d_gives_f_max_pool2d_s_values_exactly_in_the_same_layout(k, s, p, ceil):
    for seed, shape in enumerate([(2, 28, 22, 22), (30, 48, 9, 9), (1, 10, 13, 17), (3, 1, 8, 8)]):
        x = awkward(*shape, seed=seed)
        ref = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
        ours = max_pool2d(x, k, s, p, ceil_mode=ceil)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)
        assert ours.is_contiguous()  # what follows sees the layout it saw before
        cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(max_pool2d(cl, k, s, p, ceil_mode=ceil), ref, rtol=0, atol=0, equal_nan=True)


def test_max_pool2d_under_autograd_routes_the_gradient_as_f_max_pool2d_does():
    # Tied maxima (the zeros after a ReLU) are where two kernels could route the gradient differently.
    x = awkward(2, 8, 15, 15, seed=3).nan_to_num(0.0, neginf=0.0).relu().requires_grad_()
    w = rand(2, 8, 7, 7, seed=4)
    (grad_f,) = torch.autograd.grad((F.max_pool2d(x, 3, 2) * w).sum(), x)
    pooled = max_pool2d(x, 3, 2)
    (grad_ours,) = torch.autograd.grad((pooled * w).sum(), x)
    assert torch.equal(grad_ours, grad_f)
    # On this data the channels_last kernel routes ties alike too, so the promise is checked where it is
    # made: autograd records F.max_pool2d on x itself, not a pool of a channels_last copy
    assert pooled.grad_fn.name() == F.max_pool2d(x, 3, 2).grad_fn.name()


def test_faster_pools_swaps_every_max_pool_with_its_settings_and_keeps_the_outputs():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
                        nn.Sequential(nn.PReLU(4), nn.MaxPool2d(2, 2, padding=1)))
    x = rand(2, 3, 20, 20, seed=5)
    with torch.no_grad():
        before = net(x)
        assert faster_pools(net) is net
        after = net(x)
    assert [type(m) for m in net.modules() if isinstance(m, nn.MaxPool2d)] == [MaxPool2d, MaxPool2d]
    assert (net[1].kernel_size, net[1].stride, net[1].ceil_mode, net[2][1].padding) == (3, 2, True, 1)
    assert torch.equal(after, before)
