"""Pivotal Tuning Inversion (facelab.pti): behaviour on the tiny generator with a cheap perceptual stand-in."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from facelab import pti
from facelab.hub import atomic_torch_save, export_generator
from facelab.nets.stylegan2 import Generator, get_config

STEPS = 25
LR = 3e-3  # the tiny random generator needs a larger step than the paper's 3e-4 to move in 25 steps


def coarse(a, b):
    """A cheap stand-in for the perceptual distance: MSE of 4x4-average-pooled images, [N]."""
    return (F.avg_pool2d(a, 4) - F.avg_pool2d(b, 4)).square().mean((1, 2, 3))


def cfg(**kw):
    base = dict(tune_steps=STEPS, lr=LR, early_stop=None)
    base.update(kw)
    return pti.PTIConfig(**base)


@pytest.fixture
def problem(G):
    """Two targets in [-1, 1] (faces of G at other latents, squashed: the random tiny generator's
    outputs reach +-9) and two pivots that miss them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        target = torch.tanh(G.synthesis(G.mapping(torch.randn(2, G.z_dim, generator=g)), noise_mode="const") / 3)
        pivots = G.mapping(torch.randn(2, G.z_dim, generator=g))  # [2, num_ws, w_dim]
    return target, pivots


def per_image_mse(a, b):
    return (a - b).square().flatten(1).mean(1)


def test_config_defaults_are_the_papers():
    c = pti.PTIConfig()
    assert (c.pivot_steps, c.tune_steps, c.lr, c.pixel_weight, c.perceptual_weight) == (450, 350, 3e-4, 1.0, 1.0)
    assert c.locality and (c.latent_ball_psi, c.alpha, c.locality_l2_weight, c.locality_perceptual_weight) == \
        (0.5, 30.0, 0.1, 0.1)
    assert (c.locality_every, c.locality_samples, c.noise_mode) == (1, 1, "const")
    assert c.early_stop == pti.EARLY_STOP_DLIB > 0
    assert pti.PTIConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="tune_steps"):
        pti.PTIConfig(tune_steps=-1)
    with pytest.raises(ValueError, match="noise_mode"):
        pti.PTIConfig(noise_mode="fixed")
    with pytest.raises(ValueError, match="pivot_steps must be an int >= 0, got True"):  # it read as 1 step
        pti.PTIConfig(pivot_steps=True)
    with pytest.raises(ValueError, match="seed must be an int, got 'x'"):  # it failed inside tune
        pti.PTIConfig(seed="x")


def test_tune_leaves_the_callers_generator_untouched(G, problem):
    target, _ = problem
    G.train()  # in training mode the mapping would update w_avg if PTI called it carelessly
    G.mapping.requires_grad_(False)  # mixed flags must survive as they are
    state = {k: v.clone() for k, v in G.state_dict().items()}
    flags = {k: p.requires_grad for k, p in G.named_parameters()}
    # No pivots given: the W projection runs too (3 steps).
    res = pti.tune(G, target, config=cfg(pivot_steps=3, tune_steps=5), perceptual=coarse, progress=False)
    assert G.training
    assert {k: p.requires_grad for k, p in G.named_parameters()} == flags
    after = G.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    # The tuned copy: eval, frozen, changed synthesis, identical mapping and buffers.
    assert not res.G.training and not any(p.requires_grad for p in res.G.parameters())
    assert res.G is not G and res.pivots.shape == (2, G.num_ws, G.w_dim) and res.steps_run == 5
    tuned = res.G.state_dict()
    trainable = {f"synthesis.{k}" for k, _ in G.synthesis.named_parameters()}
    assert any(not torch.equal(tuned[k], state[k]) for k in trainable)
    assert all(torch.equal(tuned[k], state[k]) for k in state if k not in trainable)  # mapping, buffers


def test_tuning_brings_every_target_closer(G, problem):
    target, pivots = problem
    with torch.no_grad():
        before = per_image_mse(G.synthesis(pivots, noise_mode="const"), target)
    res = pti.tune(G, target, pivots=pivots, config=cfg(), perceptual=coarse, progress=False)
    after = per_image_mse(res.reconstruct(), target)
    assert (after < 0.5 * before).all(), (before, after)  # one generator, both images improved
    assert res.steps_run == STEPS and not res.stopped_early
    assert all(len(res.history[k]) == STEPS for k in ("loss", "pixel", "perceptual", "locality", "perceptual_max"))
    assert res.history["pixel"][-1] < res.history["pixel"][0]
    loc = res.history["locality"]  # regularised at every step (locality_every=1); 0 before the first update
    assert loc[0] < 1e-9 and all(v > 1e-6 for v in loc[1:])
    assert res.seconds >= res.tune_seconds > 0


def test_locality_regulariser_limits_the_change_far_from_the_pivots(G, problem):
    target, pivots = problem
    results = {loc: pti.tune(G, target, pivots=pivots, config=cfg(locality=loc), perceptual=coarse, progress=False)
               for loc in (False, True)}
    change = {loc: pti.locality_change(G, r.G, r.pivots, n=16, psi=1.0, perceptual=coarse)
              for loc, r in results.items()}
    assert change[True].random_mse < 0.95 * change[False].random_mse, change
    assert change[True].random_perceptual < change[False].random_perceptual, change
    # ... while both still fit their targets.
    for r in results.values():
        assert r.history["pixel"][-1] < 0.5 * r.history["pixel"][0]
    same = pti.locality_change(G, copy.deepcopy(G), pivots, n=4, perceptual=coarse)
    assert same.random_mse == same.near_mse == same.random_perceptual == 0.0


def test_ball_latents_sit_at_distance_alpha_toward_the_sample():
    pivots = torch.randn(2, 3, 4)
    w_z = torch.randn(6, 3, 4)  # 3 samples per pivot, pivot-major
    w_r = pti.ball_latents(pivots, w_z, 5.0)
    p = pivots.repeat_interleave(3, dim=0)
    d = (w_r - p).flatten(1)
    torch.testing.assert_close(d.norm(dim=1), torch.full((6,), 5.0))
    cos = F.cosine_similarity(d, (w_z - p).flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones(6))


def test_early_stop(G, problem):
    target, pivots = problem
    res = pti.tune(G, target, pivots=pivots, config=cfg(early_stop=1e9), perceptual=coarse, progress=False)
    assert res.steps_run == 0 and res.stopped_early and len(res.history["perceptual"]) == 1
    torch.testing.assert_close(list(res.G.parameters()), list(G.parameters()), rtol=0, atol=0)
    # A threshold reached mid-way stops at the first step whose worst image is below it.
    full = pti.tune(G, target, pivots=pivots, config=cfg(), perceptual=coarse, progress=False)
    worst = full.history["perceptual_max"]
    threshold = worst[10]
    expected = next(i for i, v in enumerate(worst) if v <= threshold)
    res = pti.tune(G, target, pivots=pivots, config=cfg(early_stop=threshold), perceptual=coarse, progress=False)
    assert res.steps_run == expected <= 10 and res.stopped_early


def test_save_load_round_trip(G, problem, tmp_path):
    target, pivots = problem
    res = pti.tune(G, target, pivots=pivots, config=cfg(tune_steps=4), perceptual=coarse, progress=False)
    path = res.save(tmp_path / "face.pti.pt")
    back = pti.load_pti(path, G)
    assert torch.equal(back.reconstruct(), res.reconstruct())
    assert torch.equal(back.pivots, res.pivots) and back.config == res.config and back.steps_run == 4
    assert back.history["loss"] == res.history["loss"]
    assert not any(p.requires_grad for p in back.G.parameters())

    junk = atomic_torch_save({"weights": torch.zeros(3)}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a facelab PTI file"):
        pti.load_pti(junk, G)
    with pytest.raises(ValueError, match="not a facelab PTI file"):
        pti.load_pti(export_generator(G, tmp_path / "g.pt"), G)
    other_arch = Generator(get_config("tiny", w_dim=16))
    with pytest.raises(ValueError, match="architecture"):
        pti.load_pti(path, other_arch)
    other_weights = copy.deepcopy(G)
    with torch.no_grad():
        other_weights.mapping.fc0.weight.add_(1)
    with pytest.raises(ValueError, match="base generator"):
        pti.load_pti(path, other_weights)


def test_inputs_are_checked(G, problem):
    target, pivots = problem
    with pytest.raises(ValueError, match="pivots must be"):
        pti.tune(G, target, pivots=pivots[:1], config=cfg(), perceptual=coarse, progress=False)
    with pytest.raises(ValueError, match="add the batch axis"):
        pti.tune(G, target[0], pivots=pivots[:1], config=cfg(), perceptual=coarse, progress=False)
    with pytest.raises(ValueError, match="127.5"):
        pti.tune(G, target * 255, pivots=pivots, config=cfg(), perceptual=coarse, progress=False)
    with pytest.raises(ValueError, match="one distance per image"):
        pti.tune(G, target, pivots=pivots, config=cfg(), perceptual=lambda a, b: (a - b).mean(), progress=False)
    # W pivots [N, w_dim] broadcast to W+.
    res = pti.tune(G, target, pivots=pivots[:, 0], config=cfg(tune_steps=1), perceptual=coarse, progress=False)
    assert torch.equal(res.pivots, pivots)


def test_shift_and_calibration(G):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(pti.shift_image(x, 1, 0)[..., 1:], x[..., :-1])
    assert torch.equal(pti.shift_image(x, 0, -1)[..., :-1, :], x[..., 1:, :])
    t1 = pti.calibrate_threshold(G, perceptual=coarse, n=4)
    t2 = pti.calibrate_threshold(G, perceptual=coarse, n=4, shift=2)
    assert 0 < t1 < t2


def test_default_perceptual_on_the_world_generator():
    """The real path: world64, the default dlib-lpips distance, its cached-reference fast path."""
    import facelab
    from facelab.metrics import PerceptualDistance, ReferenceDistance

    Gw = facelab.load_generator("world64", device="cpu")
    P = PerceptualDistance()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = Gw.mapping(torch.randn(2, Gw.z_dim, generator=g), truncation_psi=0.7)
        imgs = Gw.synthesis(ws, noise_mode="const")  # [2, 3, 64, 64]
    a = imgs[:1].clone().requires_grad_(True)
    fast = ReferenceDistance(P)
    assert fast.net is not None
    d_fast = fast.dist(a, fast.refs(imgs[1:]))
    (g_fast,) = torch.autograd.grad(d_fast.sum(), a)
    d_ref = P(a, imgs[1:])
    (g_ref,) = torch.autograd.grad(d_ref.sum(), a)
    torch.testing.assert_close(d_fast, d_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-7)

    res = pti.tune(Gw, imgs[1:], pivots=ws[:1], config=pti.PTIConfig(tune_steps=2, early_stop=None),
                   progress=False)  # perceptual=None: the default distance
    assert res.steps_run == 2 and res.reconstruct().shape == (1, 3, 64, 64)
    assert all(v == v for v in res.history["locality"])  # not NaN: regularised at both steps
    res = pti.tune(Gw, imgs[1:], pivots=ws[:1], config=pti.PTIConfig(tune_steps=5), tune_steps=2, early_stop=None,
                   progress=False)  # keywords override the config's fields, as project()'s do
    assert res.steps_run == 2 and res.config.tune_steps == 2
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['steps'\]; .*fields of PTIConfig"):
        pti.tune(Gw, imgs[1:], pivots=ws[:1], steps=2, progress=False)


def test_the_pivots_come_from_the_embedded_projector_config(G, problem):
    from facelab.projector import ProjectConfig, project

    target, _ = problem
    config = cfg(tune_steps=0, pivot=ProjectConfig(steps=3, lr=0.05, w_avg_samples=500, whiten=False))
    res = pti.tune(G, target, config=config, perceptual=coarse, progress=False)
    proj = project(G, target, space="w", config=config.pivot, perceptual=coarse, seed=config.seed, progress=False)
    assert torch.equal(res.pivots, proj.ws) and res.steps_run == 0
