"""StyleGAN2 networks (facelab/nets/stylegan2.py): shapes, invariants, and parity with eq. 1-3."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from facelab.nets.stylegan2 import (PRESETS, Generator, MinibatchStd, StyleGAN2Config, count_params,
                                    get_config, modulated_conv2d, style_mix, truncate)
from reference_ops import modulated_conv2d_ref


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def wplus(G, n=2, seed=0):
    """Distinct random rows, so that mixing rows up would show."""
    return rand(n, G.num_ws, G.w_dim, seed=seed)


# ---------------------------------------------------------------------------------------------
# Layout


@pytest.mark.parametrize("res", [32, 64, 256])
def test_num_ws_block_resolutions_and_output_shape(res):
    cfg = get_config("tiny", img_resolution=res)
    assert cfg.num_ws == 2 * int(math.log2(res)) - 2
    assert cfg.block_resolutions == [2 ** i for i in range(2, int(math.log2(res)) + 1)]
    with torch.device("meta"):  # shapes only, no allocation
        G = Generator(cfg)
        img = G.synthesis(torch.empty(2, cfg.num_ws, cfg.w_dim))
    assert G.num_ws == cfg.num_ws
    # One w per modulated conv, plus one for the last toRGB (the others share the next conv's w).
    assert len(G.synthesis.layers()) + 1 == G.num_ws
    assert [s[-1] for s in G.synthesis.noise_shapes()] == [4] + [r for r in cfg.block_resolutions[1:] for _ in (0, 1)]
    assert img.shape == (2, 3, res, res)


def test_forward_shapes_and_values(G):
    z = rand(3, G.z_dim)
    ws = G.mapping(z)
    assert ws.shape == (3, G.num_ws, G.w_dim)
    img = G(z, noise_mode="const")
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    assert torch.isfinite(img).all()


def test_config_f_has_the_published_parameter_count():
    # 30,370,060: the size of NVIDIA's released StyleGAN2 FFHQ generator (config-f, 1024 px).
    with torch.device("meta"):
        G = Generator("ffhq-config-f")
    assert count_params(G) == 30_370_060
    assert G.num_ws == 18 and G.img_resolution == 1024


def test_world64_generator_size():
    with torch.device("meta"):
        G = Generator("world64")
    assert 1_300_000 <= count_params(G) <= 1_700_000
    assert (G.img_resolution, G.num_ws, G.w_dim) == (64, 10, 128)


def test_mini32_generator_differs_from_world64():
    G = Generator("mini32").eval()
    assert 100_000 <= count_params(G) <= 900_000
    assert (G.img_resolution, G.num_ws, G.w_dim, G.z_dim) == (32, 8, 64, 64)
    assert PRESETS["mini32"].mapping_layers == 4 != PRESETS["world64"].mapping_layers
    with torch.no_grad():
        img = G(rand(2, G.z_dim), noise_mode="const")
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


# ---------------------------------------------------------------------------------------------
# Latents: broadcasting, truncation, style mixing, validation


def test_w_broadcast_equals_w_plus_with_repeated_rows(G):
    w = rand(2, G.w_dim)
    a = G.synthesis(w, noise_mode="const")
    b = G.synthesis(w[:, None].repeat(1, G.num_ws, 1), noise_mode="const")
    assert torch.equal(a, b)


def test_truncation_psi_and_cutoff(G):
    z = rand(4, G.z_dim)
    w_avg = G.mapping.w_avg
    ws = G.mapping(z)
    assert not torch.allclose(ws, w_avg.expand_as(ws))
    # psi = 0: every layer is w_avg.
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), w_avg.expand_as(ws))
    # psi = 1: identity.
    assert torch.equal(G.mapping(z, truncation_psi=1.0), ws)
    assert torch.equal(truncate(ws, w_avg, 1.0), ws)
    # psi = 0.3: w_avg + psi (w - w_avg).
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.3), w_avg + 0.3 * (ws - w_avg))
    # cutoff k: only layers < k move.
    k = 3
    t = G.mapping(z, truncation_psi=0.0, truncation_cutoff=k)
    torch.testing.assert_close(t[:, :k], w_avg.expand(4, k, -1))
    assert torch.equal(t[:, k:], ws[:, k:])


def test_truncation_pulls_images_toward_the_average_image(G):
    z = rand(8, G.z_dim)
    avg_img = G.synthesis(G.w_avg.expand(1, -1), noise_mode="const")
    dist = [(G(z, truncation_psi=psi, noise_mode="const") - avg_img).square().mean().item()
            for psi in (1.0, 0.5, 0.0)]
    assert dist[0] > dist[1] > dist[2] == pytest.approx(0.0, abs=1e-10)


def test_style_mix_takes_coarse_rows_from_a_and_fine_rows_from_b(G):
    a, b = wplus(G, seed=1), wplus(G, seed=2)
    for crossover in range(G.num_ws + 1):
        m = style_mix(a, b, crossover)
        assert torch.equal(m[:, :crossover], a[:, :crossover])
        assert torch.equal(m[:, crossover:], b[:, crossover:])
    img_a = G.synthesis(a, noise_mode="const")
    assert torch.equal(G.synthesis(style_mix(a, b, G.num_ws), noise_mode="const"), img_a)
    assert torch.equal(G.synthesis(style_mix(a, b, 0), noise_mode="const"), G.synthesis(b, noise_mode="const"))
    with pytest.raises(ValueError, match="crossover"):
        style_mix(a, b, G.num_ws + 1)
    with pytest.raises(ValueError, match="W\\+"):
        style_mix(a[:, 0], b, 2)


def test_check_ws_errors_name_the_expected_shapes(G):
    expected = f"W [N, {G.w_dim}] or W+ [N, {G.num_ws}, {G.w_dim}]"
    for bad in (rand(2, G.w_dim + 1), rand(2, G.num_ws - 1, G.w_dim), rand(2, G.num_ws, G.w_dim, 1), rand(G.w_dim)):
        with pytest.raises(ValueError) as e:
            G.synthesis(bad)
        assert expected in str(e.value) and str(list(bad.shape)) in str(e.value)
    with pytest.raises(TypeError, match="torch.Tensor"):
        G.synthesis(np.zeros((2, G.num_ws, G.w_dim), dtype=np.float32))
    with pytest.raises(ValueError, match=f"\\[N, {G.z_dim}\\]"):
        G.mapping(rand(2, G.z_dim + 1))


def test_gradients_reach_every_row_of_a_w_plus_latent(G):
    ws = wplus(G).requires_grad_(True)
    G.synthesis(ws, noise_mode="const").mean().backward()
    assert ws.grad is not None
    assert (ws.grad.abs().sum(dim=2) > 0).all()  # every row of every sample


# ---------------------------------------------------------------------------------------------
# Noise


def test_noise_modes(G):
    ws = wplus(G)
    for mode in ("none", "const"):
        assert torch.equal(G.synthesis(ws, noise_mode=mode), G.synthesis(ws, noise_mode=mode))
    assert not torch.equal(G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="none"))
    r1 = G.synthesis(ws, noise_mode="random")
    r2 = G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(r1, r2)


def test_explicit_noise_maps_override_noise_mode(G):
    ws = wplus(G)
    zeros = [torch.zeros(s) for s in G.synthesis.noise_shapes()]
    assert torch.equal(G.synthesis(ws, noise_mode="random", noise=zeros), G.synthesis(ws, noise_mode="none"))
    const = [layer.noise_const[None, None] for layer in G.synthesis.layers()]
    assert [tuple(c.shape) for c in const] == G.synthesis.noise_shapes()
    torch.testing.assert_close(G.synthesis(ws, noise_mode="random", noise=const),
                               G.synthesis(ws, noise_mode="const"))
    # Per-sample maps [N, 1, r, r]: sample i only sees its own map.
    maps = [rand(2, 1, s[2], s[3], seed=i) for i, s in enumerate(G.synthesis.noise_shapes())]
    both = G.synthesis(ws, noise=maps)
    first = G.synthesis(ws[:1], noise=[m[:1] for m in maps])
    torch.testing.assert_close(both[:1], first)


def test_noise_maps_are_on_the_device_asked_for_in_every_mode(G):
    from facelab.latents import noise_maps
    for mode in ("const", "none", "random"):  # const came back on G's device whatever was asked
        maps = noise_maps(G, 2, mode, device="meta")
        assert {m.device.type for m in maps} == {"meta"} and [tuple(m.shape[1:]) for m in maps] == [
            s[1:] for s in G.synthesis.noise_shapes()], mode
    ws = wplus(G)
    torch.testing.assert_close(G.synthesis(ws, noise=noise_maps(G, 2, "const")), G.synthesis(ws, noise_mode="const"))


def test_noise_argument_errors(G):
    ws = wplus(G)
    n = len(G.synthesis.layers())
    with pytest.raises(ValueError, match=f"{n} maps"):
        G.synthesis(ws, noise=[torch.zeros(1, 1, 4, 4)] * (n - 1))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


# ---------------------------------------------------------------------------------------------
# Modulated convolution


@pytest.mark.parametrize("demodulate, up", [(True, False), (False, False), (True, True)])
def test_modulated_conv2d_matches_per_sample_kernels(demodulate, up):
    from facelab.nets.resample import setup_filter

    x = rand(3, 6, 8, 8, seed=1)
    weight = rand(5, 6, 3, 3, seed=2)
    styles = rand(3, 6, seed=3) + 1.0
    f = setup_filter()
    ours = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=f)
    ref = modulated_conv2d_ref(x, weight, styles, demodulate=demodulate, up=up, f=f)
    assert ours.shape == ref.shape == (3, 5, 16 if up else 8, 16 if up else 8)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _scale_affine(layer, c):
    """A copy of ``layer`` whose styles are ``c`` times the original ones (the affine map is linear)."""
    layer = copy.deepcopy(layer)
    with torch.no_grad():
        layer.affine.weight.mul_(c)
        layer.affine.bias.mul_(c)
    return layer


def test_demodulation_makes_a_layer_invariant_to_style_scale_but_torgb_scales(G):
    block = G.synthesis.b8
    x = rand(2, block.conv1.weight.shape[1], 8, 8, seed=4)
    w = rand(2, G.w_dim, seed=5)
    c = 3.7
    conv = block.conv1
    torch.testing.assert_close(_scale_affine(conv, c)(x, w, noise_mode="const"), conv(x, w, noise_mode="const"),
                               atol=1e-5, rtol=1e-5)
    torgb = block.torgb
    y = torgb(x, w) - torgb.bias.view(1, -1, 1, 1)
    y_scaled = _scale_affine(torgb, c)(x, w) - torgb.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(y_scaled, c * y, atol=1e-5, rtol=1e-5)


def test_demodulated_output_has_unit_variance_for_unit_input():
    # Demodulation's purpose (StyleGAN2 sec. 2.2): i.i.d. unit-variance input -> unit-variance output.
    x = rand(4, 64, 32, 32, seed=6)
    weight = rand(32, 64, 3, 3, seed=7)
    styles = rand(4, 64, seed=8).abs() + 0.1
    y = modulated_conv2d(x, weight, styles)
    std = y[..., 1:-1, 1:-1].std(dim=(2, 3))  # [N, O], away from the zero-padded border
    assert (std - 1).abs().max() < 0.1


# ---------------------------------------------------------------------------------------------
# Mapping network


def test_w_avg_tracks_the_mean_in_train_mode_only(G):
    z = rand(16, G.z_dim, seed=9)
    old = G.w_avg.clone()
    w = G.mapping(z)[:, 0]  # eval mode: no update
    assert torch.equal(G.w_avg, old)
    G.train()
    G.mapping(z, update_w_avg=False)
    assert torch.equal(G.w_avg, old)
    G.mapping(z)
    beta = G.cfg.w_avg_beta
    torch.testing.assert_close(G.w_avg, beta * old + (1 - beta) * w.mean(0))


def test_mapping_is_invariant_to_the_scale_of_z(G):
    z = rand(4, G.z_dim, seed=10)
    ws = G.mapping(z)
    # (Exact up to the pixel norm's eps = 1e-8, negligible next to mean(z^2) for these scales.)
    for c in (0.3, 7.0):
        torch.testing.assert_close(G.mapping(c * z), ws, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(G.mapping(z + 0.3), ws, atol=1e-3)  # a shift is not a scale


# ---------------------------------------------------------------------------------------------
# Discriminator


@pytest.mark.parametrize("n", [1, 3, 4, 8])
def test_discriminator_logits_shape(D, n):
    logits = D(rand(n, 3, 32, 32, seed=n))
    assert logits.shape == (n, 1)
    assert torch.isfinite(logits).all()


def test_discriminator_rejects_wrong_resolution(D):
    with pytest.raises(ValueError, match="32, 32"):
        D(rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"images must be \[N, C, 32, 32\], got \[3, 32, 32\]"):
        D(rand(3, 32, 32))


@pytest.mark.parametrize("n, group", [(8, 4), (6, 3), (3, 3), (1, 1)])
def test_minibatch_std_matches_a_loop_over_groups(n, group):
    """Groups are strided as in StyleGAN2-ADA: sample i is in group i % (n // group). The group size
    is the largest divisor of n that is at most 4."""
    x = rand(n, 4, 3, 3, seed=11)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (n, 5, 3, 3)
    assert torch.equal(out[:, :4], x)
    m = n // group
    for i in range(n):
        members = x[[j for j in range(n) if j % m == i % m]]  # [group, C, H, W]
        assert len(members) == group
        std = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 4], std.expand(3, 3))


def test_discriminator_couples_samples_only_within_a_minibatch_std_group(D):
    # With N = 8 and group size 4, sample 0 shares its group with samples 2, 4 and 6 only.
    x = rand(8, 3, 32, 32, seed=12)
    base = D(x)
    for j, coupled in ((1, False), (2, True), (7, False)):
        x2 = x.clone()
        x2[j] += 0.5
        changed = D(x2)
        assert not torch.allclose(changed[j], base[j])
        assert torch.allclose(changed[0], base[0], atol=1e-6) != coupled


# ---------------------------------------------------------------------------------------------
# Configuration


def test_get_config_errors_teach():
    with pytest.raises(ValueError) as e:
        get_config("ffhq1024")
    assert all(name in str(e.value) for name in PRESETS)
    for bad in (48, 2, 8192, 64.0):
        with pytest.raises(ValueError, match="power of two"):
            StyleGAN2Config(img_resolution=bad)
    with pytest.raises(ValueError, match="power of two"):
        get_config("tiny", img_resolution=100)
    with pytest.raises(ValueError, match="w_dim"):
        get_config("tiny", w_dim=0)


def test_config_dict_round_trip_and_unknown_fields():
    cfg = get_config("world64", conv_clamp=256.0)
    assert StyleGAN2Config.from_dict(cfg.to_dict()) == cfg
    assert get_config(cfg) is cfg
    with pytest.raises(ValueError, match="mapping_lr"):
        StyleGAN2Config.from_dict({**cfg.to_dict(), "mapping_lr": 0.01})


def test_conv_clamp_bounds_layer_outputs(tiny_cfg):
    torch.manual_seed(0)
    G = Generator(get_config(tiny_cfg, conv_clamp=0.05)).eval()
    ws = G.mapping(rand(2, G.z_dim))
    feats = []
    hook = G.synthesis.b16.conv1.register_forward_hook(lambda m, i, o: feats.append(o))
    G.synthesis(ws, noise_mode="none")
    hook.remove()
    assert feats[0].abs().max() <= 0.05 + 1e-7


def test_mixed_precision_forward_and_backward_run_and_stay_close_to_float32():
    from facelab.nets.stylegan2 import Discriminator
    """The CUDA training path uses bfloat16 autocast; CPU autocast exercises the same dtype logic."""
    torch.manual_seed(0)
    G, D = Generator("tiny"), Discriminator("tiny")
    z = torch.randn(4, G.z_dim)
    ref = G(z, noise_mode="const")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(z, noise_mode="const")
        logits = D(img)
    assert G.mapping.w_avg.dtype == torch.float32
    assert img.dtype == torch.float32  # toRGB outputs are accumulated in float32
    torch.nn.functional.softplus(-logits).float().mean().backward()
    assert G.synthesis.b4.conv1.weight.grad is not None
    assert (img - ref).abs().max() < 0.1 * ref.abs().max()  # bf16 has ~3 significant digits


def test_lower_resolution_is_the_generators_own_coarser_image():
    from facelab.nets.stylegan2 import lower_resolution
    G = Generator(get_config("tiny")).eval()
    small = lower_resolution(G, 16)
    assert (small.img_resolution, small.num_ws) == (16, 6) and G.num_ws == 8
    seen = {}
    G.synthesis.b16.register_forward_hook(lambda m, args, out: seen.update(img=out[1]))
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        G.synthesis(ws, noise_mode="const")
        torch.testing.assert_close(small.synthesis(ws[:, :small.num_ws], noise_mode="const"), seen["img"])
    assert torch.equal(small.w_avg, G.w_avg)
    with pytest.raises(ValueError, match="coarser blocks"):
        lower_resolution(G, 32)  # its own resolution: nothing to cut
