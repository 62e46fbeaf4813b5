"""The official StyleGAN2-ADA <-> facelab name table (facelab/nets/official.py).

tests/data/stylegan2_ada_ffhq_config_f_{G,D}.json hold the key names and shapes of NVIDIA's
config-f networks (facts only; see their "source" field). Numerical parity with the official code
is checked by bench/official_parity.py, which needs a checkout of that code.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facelab.nets.official import (RULES, config_from_official_shapes, facelab_to_official,
                                   official_to_facelab)
from facelab.nets.resample import setup_filter
from facelab.nets.stylegan2 import Discriminator, Generator, get_config

DATA = Path(__file__).parent / "data"


def official_shapes(which: str) -> dict[str, tuple[int, ...]]:
    data = json.loads((DATA / f"stylegan2_ada_ffhq_config_f_{which}.json").read_text())
    assert len(data["keys"]) == data["num_keys"]
    return {k: tuple(v) for k, v in data["keys"].items()}


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def facelab_state(which: str, preset: str = "ffhq-config-f") -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        net = (Discriminator if which == "D" else Generator)(get_config(preset))
    return net.state_dict()


def shapes_of(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("which, n_official, n_facelab", [("G", 182, 156), ("D", 82, 48)])
def test_config_f_matches_official_keys_and_shapes(which, n_official, n_facelab):
    official = official_shapes(which)
    ours = facelab_state(which)
    assert (len(official), len(ours)) == (n_official, n_facelab)
    assert shapes_of(facelab_to_official(ours, which=which)) == official
    assert shapes_of(official_to_facelab(meta_state(official), which=which)) == shapes_of(ours)
    # Everything we drop is a resample_filter buffer.
    assert {k for k in official if k not in ours} == {k for k in official if k.endswith(".resample_filter")}


@pytest.mark.parametrize("which", ["G", "D"])
def test_round_trip_keeps_keys_and_tensors(which):
    official = meta_state(official_shapes(which))
    facelab = official_to_facelab(official, which=which)
    back = facelab_to_official(facelab, which=which)
    assert set(back) == set(official)
    assert all(back[k] is official[k] for k in facelab)  # renamed, never copied
    filters = [back[k] for k in back if k.endswith("resample_filter")]
    assert all(f.shape == (4, 4) and f.is_meta for f in filters)  # made on the parameters' device


def test_round_trip_with_values_reproduces_the_generator():
    torch.manual_seed(0)
    G = Generator("tiny").eval()
    with torch.no_grad():
        G.synthesis.b8.conv0.noise_strength.fill_(0.3)
    official = facelab_to_official(G.state_dict())
    assert all(torch.equal(v, setup_filter()) for k, v in official.items() if k.endswith("resample_filter"))
    G2 = Generator(config_from_official_shapes(official)).eval()
    G2.load_state_dict(official_to_facelab(official), strict=True)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    assert torch.equal(G.synthesis(ws, noise_mode="const"), G2.synthesis(ws, noise_mode="const"))


def test_config_from_official_shapes_recovers_config_f():
    assert config_from_official_shapes(meta_state(official_shapes("G"))) == get_config("ffhq-config-f")
    d_cfg = config_from_official_shapes(meta_state(official_shapes("D")), which="D")
    assert d_cfg == get_config("ffhq-config-f")  # D shows everything but z/w, which default to 512
    assert config_from_official_shapes(meta_state(official_shapes("G")), conv_clamp=256.0).conv_clamp == 256.0


@pytest.mark.parametrize("preset", ["world64", "tiny"])
@pytest.mark.parametrize("which", ["G", "D"])
def test_config_inference_on_other_presets(preset, which):
    cfg = config_from_official_shapes(facelab_to_official(facelab_state(which, preset), which=which),
                                      which=which)
    fields = ["img_resolution", "img_channels", "channel_base", "channel_max"]
    fields += ["z_dim", "w_dim", "mapping_layers"] if which == "G" else ["mbstd_num_channels"]
    assert {f: getattr(cfg, f) for f in fields} == {f: getattr(get_config(preset), f) for f in fields}


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_keys_and_shapes_give_one_line_errors():
    official = meta_state(official_shapes("G"))

    extra = dict(official, **{"mapping.embed.weight": torch.empty(512, 10, device="meta")})
    assert "mapping.embed.weight" in one_line_error(official_to_facelab, extra)

    missing = dict(official)
    del missing["synthesis.b64.conv1.noise_const"]
    assert "missing keys [synthesis.b64.conv1.noise_const]" in one_line_error(official_to_facelab, missing)

    bad = dict(official, **{"synthesis.b8.conv0.weight": torch.empty(512, 512, 3, 1, device="meta")})
    assert "synthesis.b8.conv0.weight [512, 512, 3, 1] != [512, 512, 3, 3]" in one_line_error(
        official_to_facelab, bad)

    # With an explicit config, even a shape that would fit another config is caught.
    narrow = dict(official, **{"mapping.fc0.weight": torch.empty(512, 256, device="meta")})
    assert "mapping.fc0.weight" in one_line_error(official_to_facelab, narrow,
                                                  cfg=get_config("ffhq-config-f"))

    no_fc0 = {k: v for k, v in official.items() if k != "mapping.fc0.weight"}
    assert "mapping.fc0.weight" in one_line_error(official_to_facelab, no_fc0)

    d_in_g = meta_state(official_shapes("D"))
    assert "b1024.fromrgb.weight" in one_line_error(official_to_facelab, d_in_g, which="G")

    assert "which must be" in one_line_error(official_to_facelab, official, which="E")
    assert "no official name" in one_line_error(
        facelab_to_official, {"mapping.fc0.weights": torch.empty(1, device="meta")})


def test_a_non_default_resample_filter_is_refused():
    G = Generator("tiny")
    official = facelab_to_official(G.state_dict())
    ok = official_to_facelab(official)
    assert set(ok) == set(G.state_dict())
    f = torch.outer(torch.tensor([1.0, 2, 2, 1]), torch.tensor([1.0, 2, 2, 1]))
    official["synthesis.b8.conv0.resample_filter"] = f / f.sum()
    msg = one_line_error(official_to_facelab, official)
    assert "synthesis.b8.conv0.resample_filter" in msg and "[1,3,3,1]" in msg


def test_rules_cover_both_directions_without_ambiguity():
    for which, rules in RULES.items():
        official = official_shapes(which)
        for key in official:
            hits = [r for r in rules if r.match(key, side="official") is not None]
            assert len(hits) == 1, (key, hits)


def test_docstring_table_lists_every_rule():
    import facelab.nets.official as official
    rows = [line.split() for line in official.__doc__.splitlines()]
    documented = {(row[0], row[1]) for row in rows if len(row) > 2}
    for rules in RULES.values():
        for rule in rules:
            assert (rule.official, "(same)" if rule.facelab == rule.official else "dropped") in documented, rule
