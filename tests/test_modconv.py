"""The two ways of running a modulated convolution (facelab/nets/stylegan2.py) and their choice.

"grouped" builds per-sample kernels (StyleGAN2's fused modconv), "scaled" scales the activations
around a shared-weight convolution. They must agree with each other and with eq. 1-3 written out
per sample (tests/reference_ops.py), forward and backward, in float32 and float64, with and
without upsampling, for one sample and for several; and the synthesis network must give the same
images and gradients whichever way it runs, in either memory layout.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facelab.nets.resample import setup_filter, upfirdn2d, upsample2d
from facelab.nets.stylegan2 import (GROUPED_BELOW, Generator, choose_modulation, demodulation_coefficients,
                                    modulated_conv2d)
from reference_ops import modulated_conv2d_ref


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def tol(dtype, ref: torch.Tensor):
    """Tolerances for comparing with ``ref``. An element of a gradient is a sum of hundreds of products,
    and where they cancel, float32 leaves an error of a few ulps of the *products*, not of the small sum:
    so the absolute tolerance scales with the tensor's largest element (8 float32 ulps of it), never
    below 1e-5 (float64: 1e-11)."""
    if dtype != torch.float32:
        return dict(rtol=1e-11, atol=1e-11)
    return dict(rtol=1e-5, atol=max(1e-5, 1e-6 * float(ref.abs().max())))


def layer_inputs(n, up, dtype, *, k=3, i=6, o=5, hw=8):
    x = rand(n, i, hw, hw, seed=1, dtype=dtype)
    weight = rand(o, i, k, k, seed=2, dtype=dtype)
    styles = rand(n, i, seed=3, dtype=dtype) + 1.0
    r = 2 * hw if up else hw
    noise = rand(n, 1, r, r, seed=4, dtype=dtype) * 0.3
    bias = rand(o, seed=5, dtype=dtype)
    return x, weight, styles, noise, bias


def run_with_grads(modulation, x, weight, styles, noise, bias, *, up, demodulate=True, gain=1.0,
                   channels_last=False):
    """Output and gradients w.r.t. every input of one modulated_conv2d call."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, styles, noise, bias)]
    xl = leaves[0].contiguous(memory_format=torch.channels_last) if channels_last else leaves[0]
    f = setup_filter().to(x.dtype)
    y = modulated_conv2d(xl, leaves[1], leaves[2], demodulate=demodulate, up=up, resample_filter=f,
                         modulation=modulation, noise=leaves[3], bias=leaves[4], gain=gain)
    g = rand(*y.shape, seed=6, dtype=y.dtype)
    grads = torch.autograd.grad(y, leaves, g)
    return y.detach(), grads


# ---------------------------------------------------------------------------------------------
# Grouped vs scaled vs eq. 1-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_grouped_and_scaled_give_the_same_output_and_gradients(dtype, n, up, demodulate):
    inputs = layer_inputs(n, up, dtype)
    y_g, grads_g = run_with_grads("grouped", *inputs, up=up, demodulate=demodulate, gain=math.sqrt(2))
    y_s, grads_s = run_with_grads("scaled", *inputs, up=up, demodulate=demodulate, gain=math.sqrt(2))
    assert y_g.dtype == y_s.dtype == dtype
    torch.testing.assert_close(y_g, y_s, **tol(dtype, y_s))
    for name, a, b in zip(("x", "weight", "styles", "noise", "bias"), grads_g, grads_s):
        torch.testing.assert_close(a, b, **tol(dtype, b), msg=lambda m: f"d/d{name}: {m}")


@pytest.mark.parametrize("modulation", ["grouped", "scaled", "auto"])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("up", [False, True])
def test_float64_matches_explicit_per_sample_kernels_to_1e9(modulation, n, up):
    """w''_n = w * s_n / ||w * s_n|| per sample, one convolution per sample (eps 1e-8 as in StyleGAN2)."""
    x, weight, styles, noise, bias = layer_inputs(n, up, torch.float64)
    f = setup_filter().double()
    ours = modulated_conv2d(x, weight, styles, up=up, resample_filter=f, modulation=modulation)
    ref = modulated_conv2d_ref(x, weight, styles, up=up, f=f)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    # With noise, bias and gain: gain * (conv + noise + bias).
    ours = modulated_conv2d(x, weight, styles, up=up, resample_filter=f, modulation=modulation,
                            noise=noise, bias=bias, gain=1.7)
    torch.testing.assert_close(ours, 1.7 * (ref + noise + bias.view(1, -1, 1, 1)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("modulation", ["grouped", "scaled"])
@pytest.mark.parametrize("n", [1, 2])
def test_torgb_1x1_without_demodulation_matches_per_sample_kernels(modulation, n):
    x, weight, styles, _, bias = layer_inputs(n, False, torch.float64, k=1, o=3)
    ref = modulated_conv2d_ref(x, weight, styles, demodulate=False)
    for layout in (torch.contiguous_format, torch.channels_last):
        ours = modulated_conv2d(x.contiguous(memory_format=layout), weight, styles, demodulate=False,
                                modulation=modulation, bias=bias)
        torch.testing.assert_close(ours, ref + bias.view(1, -1, 1, 1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("modulation", ["grouped", "scaled"])
@pytest.mark.parametrize("up", [False, True])
def test_channels_last_input_gives_the_same_numbers_and_keeps_its_layout(modulation, up):
    inputs = layer_inputs(1, up, torch.float32, i=8, o=8)
    y_c, grads_c = run_with_grads(modulation, *inputs, up=up)
    y_l, grads_l = run_with_grads(modulation, *inputs, up=up, channels_last=True)
    assert y_l.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_l, y_c, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_l, grads_c):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_demodulation_is_computed_in_float32_or_the_inputs_wider_precision():
    weight, styles = rand(5, 6, 3, 3, seed=1), rand(2, 6, seed=2)
    assert demodulation_coefficients(weight, styles).dtype == torch.float32
    d64 = demodulation_coefficients(weight.double(), styles.double())
    assert d64.dtype == torch.float64
    explicit = 1 / (weight.double()[None] * styles.double()[:, None, :, None, None]).square().sum(dim=(2, 3, 4)).add(1e-8).sqrt()
    torch.testing.assert_close(d64, explicit, rtol=1e-13, atol=0)
    # Low-precision inputs are never demodulated below float32.
    assert demodulation_coefficients(weight.bfloat16(), styles.bfloat16()).dtype == torch.float32
    assert demodulation_coefficients(weight.half(), styles).dtype == torch.float32


@pytest.mark.parametrize("modulation", ["grouped", "scaled"])
def test_bfloat16_autocast_keeps_styles_and_demodulation_in_float32(modulation):
    x, weight, styles, noise, bias = layer_inputs(1, True, torch.float32)
    f = setup_filter()
    ref = modulated_conv2d(x, weight, styles, up=True, resample_filter=f, modulation=modulation, noise=noise, bias=bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = modulated_conv2d(x, weight, styles, up=True, resample_filter=f, modulation=modulation,
                             noise=noise, bias=bias)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_unknown_modulation_and_mismatched_shapes_are_refused():
    x, weight, styles, _, _ = layer_inputs(2, False, torch.float32)
    with pytest.raises(ValueError, match="modulation must be one of"):
        modulated_conv2d(x, weight, styles, modulation="fused")
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(x, weight, styles[:1])
    with pytest.raises(ValueError, match="resample_filter"):
        modulated_conv2d(x, weight, styles, up=True)


# ---------------------------------------------------------------------------------------------
# The choice


def test_choose_modulation_follows_its_documented_rules():
    def choose(n, i, o, hw, *, k=3, up=False, grad=None):
        x = torch.empty(n, i, hw, hw, device="meta")
        weight = torch.empty(o, i, k, k, device="meta", requires_grad=grad == "weight")
        styles = torch.empty(n, i, device="meta", requires_grad=grad is not None)
        return choose_modulation(x, weight, styles, up=up)

    # Batches of 3x3 convolutions are always scaled, whatever the shapes.
    assert choose(2, 32, 32, 512) == choose(2, 32, 32, 512, grad="weight") == "scaled"
    # 1x1 toRGB kernels are tiny next to their activations, at any batch size; not so 1x1 at 1 px.
    assert choose(1, 512, 3, 4, k=1) == choose(1, 32, 3, 1024, k=1, grad="styles") == "grouped"
    assert choose(16, 64, 3, 64, k=1) == "grouped"
    assert choose(1, 64, 64, 1, k=1) == "scaled"
    # Kernel/activation ratios: 512 ch at 16 px is 4.5 (scaled); 32 ch at 1024 px is 1.4e-4 (grouped).
    for grad in (None, "weight", "styles"):
        assert choose(1, 512, 512, 16, grad=grad) == "scaled"
        assert choose(1, 32, 32, 1024, grad=grad) == "grouped"
    # 256 ch at 128 px (ratio 0.07): grouped for rendering and tuning, scaled for inversion.
    assert choose(1, 256, 256, 128) == choose(1, 256, 256, 128, grad="weight") == "grouped"
    assert choose(1, 256, 256, 128, grad="styles") == "scaled"
    # Gradients that are not being recorded do not count.
    with torch.no_grad():
        assert choose(1, 256, 256, 128, grad="styles") == "grouped"
    assert GROUPED_BELOW["styles_grad"] < GROUPED_BELOW["no_grad"] < GROUPED_BELOW["weight_grad"]


# ---------------------------------------------------------------------------------------------
# The synthesis network in every mode


def synthesis_outputs(G, ws, modulation, memory_format, *, noise=None):
    G.synthesis.modulation, G.synthesis.memory_format = modulation, memory_format
    G.zero_grad(set_to_none=True)
    ws = ws.detach().clone().requires_grad_(True)
    noise = None if noise is None else [m.detach().clone().requires_grad_(True) for m in noise]
    img = G.synthesis(ws, noise_mode="const", noise=noise)
    g = rand(*img.shape, seed=7)
    (img * g).sum().backward()
    grads = {"ws": ws.grad, **{k: p.grad for k, p in G.synthesis.named_parameters()}}
    if noise is not None:
        grads.update({f"noise{i}": m.grad for i, m in enumerate(noise)})
    G.synthesis.modulation, G.synthesis.memory_format = "auto", "auto"
    return img.detach(), grads


@pytest.mark.parametrize("n", [1, 2])
def test_synthesis_gives_the_same_images_and_gradients_in_every_mode(G, n):
    ws = rand(n, G.num_ws, G.w_dim, seed=8)
    noise = [rand(1, 1, *s[2:], seed=20 + i) for i, s in enumerate(G.synthesis.noise_shapes())]
    ref_img, ref_grads = synthesis_outputs(G, ws, "scaled", "contiguous", noise=noise)
    for modulation in ("grouped", "scaled", "auto"):
        for memory_format in ("channels_last", "contiguous", "auto"):
            img, grads = synthesis_outputs(G, ws, modulation, memory_format, noise=noise)
            assert img.is_contiguous() and img.dtype == torch.float32
            torch.testing.assert_close(img, ref_img, rtol=1e-5, atol=1e-5)
            assert grads.keys() == ref_grads.keys()
            for k in grads:
                torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-5,
                                           msg=lambda m: f"{modulation}/{memory_format} d/d{k}: {m}")


def test_frozen_generator_gradients_reach_the_latent_in_every_mode(G):
    """Inversion's setting: G frozen, gradients for W+ only (choose_modulation's styles-only rule)."""
    G.requires_grad_(False)
    ws = rand(1, G.num_ws, G.w_dim, seed=9)
    grads = []
    for modulation in ("grouped", "scaled", "auto"):
        G.synthesis.modulation = modulation
        w = ws.clone().requires_grad_(True)
        G.synthesis(w, noise_mode="const").square().mean().backward()
        grads.append(w.grad)
    G.synthesis.modulation = "auto"
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-4, atol=1e-6)


def test_double_backward_path_length_regulariser_agrees_across_modes(G):
    """The trainer differentiates |J_w^T y| (create_graph=True), through the in-place activations too."""
    ws = rand(1, G.num_ws, G.w_dim, seed=10)
    y = rand(1, 3, 32, 32, seed=11)
    results = []
    for modulation in ("grouped", "scaled"):
        G.synthesis.modulation = modulation
        G.zero_grad(set_to_none=True)
        w = ws.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((G.synthesis(w, noise_mode="const") * y).sum(), w, create_graph=True)
        grad.square().sum().backward()
        results.append((grad.detach(), G.synthesis.b16.conv0.weight.grad.clone(), w.grad.clone()))
    G.synthesis.modulation = "auto"
    for a, b in zip(*results):  # float32 second derivatives: compare relative to their scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_modulation_and_memory_format_settings_are_checked(G):
    ws = rand(1, G.num_ws, G.w_dim)
    G.synthesis.modulation = "fused"
    with pytest.raises(ValueError, match="modulation must be one of"):
        G.synthesis(ws)
    G.synthesis.modulation, G.synthesis.memory_format = "auto", "nhwc"
    with pytest.raises(ValueError, match="memory_format must be one of"):
        G.synthesis(ws)
    G.synthesis.memory_format = "auto"
    assert "modulation" not in str(G.state_dict().keys())


def test_a_batch_1_generator_under_bfloat16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    G = Generator("tiny")
    z = torch.randn(1, G.z_dim)
    ref = G(z, noise_mode="const")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(z, noise_mode="const")
    assert img.dtype == torch.float32
    img.square().mean().backward()
    assert (img - ref).abs().max() < 0.1 * ref.abs().max()


# ---------------------------------------------------------------------------------------------
# The resampling fast paths the modulated convolution relies on


def test_upsample2d_by_transposed_convolution_equals_zero_insertion_for_an_asymmetric_filter():
    taps = torch.tensor([1.0, 2.0, 4.0, 3.0], dtype=torch.float64)
    f = torch.outer(taps, taps.flip(0))
    f = f / f.sum()  # [4, 4], neither symmetric nor separable-symmetric
    x = rand(2, 3, 5, 7, dtype=torch.float64)
    k = f.shape[0]
    ref = upfirdn2d(x, f, up=2, padding=((k + 1) // 2, (k - 2) // 2) * 2, gain=4.0)
    torch.testing.assert_close(upsample2d(x, f), ref, rtol=1e-12, atol=1e-12)


def test_symmetric_padding_fast_path_equals_explicit_padding():
    x = rand(2, 3, 9, 9, dtype=torch.float64)
    f = setup_filter().double()
    fast = upfirdn2d(x, f, padding=(2, 2, 1, 1), down=2)
    explicit = upfirdn2d(F.pad(x, [2, 2, 1, 1]), f, down=2)  # zero padding, then none
    torch.testing.assert_close(fast, explicit, rtol=1e-12, atol=1e-12)
