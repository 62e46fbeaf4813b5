"""Reliability at the public boundaries (#16): non-finite values and [0, 1] images never pass
silently, diverging optimisations stop with the step and the loss, and altered files give one-line
errors. Tiny seeded networks and a cheap perceptual stand-in, as in test_pti / test_invert."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import facelab as fl
from facelab import interpret, invert, pti
from facelab.hub import atomic_torch_save, load_file
from facelab.mapper import LatentMapper, load_mapper, save_mapper
from facelab.nets.attributes import label_images


def coarse(a, b):
    """MSE of 4x4-average-pooled images, [N]: a perceptual stand-in that costs nothing."""
    return (F.avg_pool2d(a, 4) - F.avg_pool2d(b, 4)).square().mean((1, 2, 3))


@pytest.fixture
def problem(G):
    """A target in [-1, 1] (a face of G, squashed) and a W+ pivot that misses it."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        target = torch.tanh(G.synthesis(G.mapping(torch.randn(1, G.z_dim, generator=g)), noise_mode="const") / 3)
        pivots = G.mapping(torch.randn(1, G.z_dim, generator=g))  # [1, num_ws, w_dim]
    return target, pivots


def with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = float("nan")
    return x


def one_line(e) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


TUNE = dict(perceptual=coarse, progress=False)
PROJECT = dict(perceptual=coarse, w_avg_samples=500, steps=2, progress=False)


# ---------------------------------------------------------------------------------------------
# Images: NaN named, [0, 1] warned about


def test_images_in_zero_one_warn_at_every_boundary(G, problem):
    target, pivots = problem
    unit = (target + 1) / 2  # the same face in [0, 1]: read as [-1, 1] it is washed out
    with pytest.warns(UserWarning, match=r"like an image in \[0, 1\].*x \* 2 - 1"):
        invert.project(G, unit, **PROJECT)
    with pytest.warns(UserWarning, match=r"like an image in \[0, 1\]"):
        pti.tune(G, unit, pivots=pivots, config=pti.PTIConfig(tune_steps=1, early_stop=None), **TUNE)


def test_nan_images_are_refused_saying_nan(G, problem):
    target, pivots = problem
    with pytest.raises(ValueError, match="NaN in target") as e:
        invert.project(G, with_nan(target), **PROJECT)
    assert "[-1, 1]" in one_line(e)
    with pytest.raises(ValueError, match="NaN in images"):
        pti.tune(G, with_nan(target), pivots=pivots, **TUNE)
    with pytest.raises(ValueError, match=r"Inf in images.*\[-1, 1\]"):
        label_images(torch.full((1, 3, 64, 64), math.inf), attributes=["face_conf"], progress=False)


# ---------------------------------------------------------------------------------------------
# Latents and edit sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_one_bad_value_anywhere_is_found_in_every_float_dtype(dtype):
    from facelab.utils import check_finite, finite_extremes

    x = torch.linspace(-1, 1, 3 * 64 * 64 * 5, dtype=dtype).reshape(5, 3, 64, 64)
    assert finite_extremes(x) == (-1.0, 1.0)
    for bad, name in ((math.nan, "NaN"), (math.inf, "Inf"), (-math.inf, "Inf")):
        y = x.clone()
        y[4, 2, 63, 63] = bad  # the last element
        assert finite_extremes(y) is None
        with pytest.raises(ValueError, match=f"^{name} in y"):
            check_finite(y, "y")
    y[0, 0, 0, 0] = math.nan  # both kinds: both named
    with pytest.raises(ValueError, match="^NaN and Inf in y"):
        check_finite(y, "y")


@pytest.mark.parametrize("bad, message", [(math.inf, "Inf in {}"), (math.nan, "NaN in {}"),
                                          (1e39, r"Inf in {} \(values beyond .* overflow float32")])
def test_interpret_edits_refuse_non_finite_steps(bad, message):
    x = torch.randn(3, 8)
    normal = torch.randn(8)
    with pytest.raises(ValueError, match=message.format("step")):
        interpret.edit(x, normal, bad)
    with pytest.raises(ValueError, match=message.format("distance")):
        interpret.edit_to_distance(x, normal, bad)
    with pytest.raises(ValueError, match="in step"):
        interpret.edit(x, normal, torch.tensor([1.0, bad, 2.0]))  # one per latent
    with pytest.raises(ValueError, match="NaN in the latents") as e:
        interpret.edit(with_nan(x), normal, 1.0)
    one_line(e)
    assert torch.isfinite(interpret.edit(x, normal, 1e30)).all()  # large but finite is an edit


@pytest.mark.parametrize("bad", [math.inf, math.nan, 1e39])
def test_mapper_edit_refuses_non_finite_changes(G, bad):
    m = LatentMapper(G.num_ws, G.w_dim).eval()
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="in the age change") as e:
        m.edit(ws, age=bad)
    one_line(e)
    with pytest.raises(ValueError, match="NaN in ws"):
        m.edit(with_nan(ws), age=1.0)


def test_projection_init_and_tuning_pivots_must_be_finite(G, problem):
    target, pivots = problem
    with pytest.raises(ValueError, match="NaN in init") as e:
        invert.project(G, target, init=with_nan(pivots[:, 0]), **PROJECT)
    one_line(e)
    with pytest.raises(ValueError, match="NaN in pivots"):
        pti.tune(G, target, pivots=with_nan(pivots), **TUNE)


def test_a_diverging_tune_stops_naming_the_step_and_the_loss(G, problem):
    target, pivots = problem
    config = pti.PTIConfig(tune_steps=30, lr=1e6, early_stop=None)
    with pytest.raises(FloatingPointError, match=r"pivotal tuning diverged at step \d+: the loss is (nan|inf).*lr"):
        pti.tune(G, target, pivots=pivots, config=config, **TUNE)


def test_a_diverging_projection_names_the_step(G, problem):
    target, _ = problem
    calls = []

    def breaks_at_the_second_step(a, b):
        calls.append(1)
        d = coarse(a, b)
        return d * math.nan if len(calls) == 2 else d

    with pytest.raises(FloatingPointError, match=r"the W projection diverged at step 1: the loss is nan"):
        invert.project(G, target, **{**PROJECT, "perceptual": breaks_at_the_second_step})


# ---------------------------------------------------------------------------------------------
# Loaded files: shapes, missing keys, NaN weights


@pytest.fixture
def pti_file(G, problem, tmp_path):
    target, pivots = problem
    res = pti.tune(G, target, pivots=pivots, config=pti.PTIConfig(tune_steps=1, early_stop=None), **TUNE)
    return res.save(tmp_path / "face.pti.pt")


def altered(path, tmp_path, change) -> str:
    ckpt = load_file(path)
    change(ckpt)
    return str(atomic_torch_save(ckpt, tmp_path / "altered.pt"))


def test_load_pti_checks_shapes_pivots_and_nan(G, pti_file, tmp_path):
    key = "b8.conv1.weight"

    def wrong_shape(ckpt):
        ckpt["state_dict"][key] = ckpt["state_dict"][key][:1]  # copy_ would broadcast it

    def nan_weight(ckpt):
        ckpt["state_dict"][key] = with_nan(ckpt["state_dict"][key])

    def wrong_pivots(ckpt):
        ckpt["pivots"] = ckpt["pivots"][:, :2]

    def nan_pivots(ckpt):
        ckpt["pivots"] = with_nan(ckpt["pivots"])

    def missing(ckpt):
        del ckpt["state_dict"][key]

    for change, message in ((wrong_shape, rf"other shapes: {key} \[1, "), (nan_weight, f"NaN in {key}"),
                            (wrong_pivots, r"its pivots are \[1, 2, "), (nan_pivots, "NaN in the pivots of"),
                            (missing, f"missing {key}")):
        with pytest.raises(ValueError, match=message) as e:
            pti.load_pti(altered(pti_file, tmp_path, change), G)
        assert "base generator" in one_line(e)


def test_altered_mapper_files_are_one_line_errors(G, tmp_path):
    path = tmp_path / "m.pt"
    save_mapper(LatentMapper(G.num_ws, G.w_dim), path)

    def nan(ckpt):
        name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
        ckpt["state_dict"][name] = with_nan(ckpt["state_dict"][name])

    for change, message in ((nan, "NaN in"), (lambda c: c.pop("num_ws"), "incomplete .*without num_ws"),
                            (lambda c: c.update(w_dim=G.w_dim * 2), "other shapes")):
        with pytest.raises(ValueError, match=message) as e:
            load_mapper(altered(path, tmp_path, change), device="cpu")
        one_line(e)


def test_public_api_still_works_end_to_end(G, problem):
    """The notebooks' path on finite inputs: project, tune, edit."""
    target, _ = problem
    proj = invert.project(G, target, **PROJECT)
    res = pti.tune(G, target, pivots=proj, config=pti.PTIConfig(tune_steps=2, early_stop=None), **TUNE)
    edited = interpret.edit(res.pivots, torch.randn(G.w_dim), 1.0)
    assert torch.isfinite(res.G.synthesis(edited, noise_mode="const")).all()
    assert fl.to_tensor(fl.imaging.to_uint8(target)[0]).shape == target.shape
