"""The e4e-style encoder (facelab.nets.encoder, facelab.encoder, facelab.train.encoder) on the tiny generator."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facelab import encoder as enc
from facelab import pti
from facelab.hub import load_encoder, save_encoder
from facelab.nets.encoder import Encoder, EncoderConfig, layer_level, layer_resolution
from facelab.nets.stylegan2 import Generator, get_config


@pytest.fixture
def E(G):
    torch.manual_seed(0)
    return Encoder(G.num_ws, G.w_dim, G.mapping.w_avg, EncoderConfig(resolution=G.img_resolution)).eval()


def faces(G, n=3, seed=0):
    with torch.no_grad():
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
        return torch.tanh(G.synthesis(G.mapping(z), noise_mode="const") / 3)


def test_layer_resolutions_and_levels():
    assert [layer_resolution(i) for i in range(9)] == [4, 8, 8, 16, 16, 32, 32, 64, 64]  # notebook 00's map
    assert [layer_level(i) for i in range(10)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]  # pSp's coarse / medium / fine


def test_codes_are_w_avg_plus_w_plus_open_deltas(G, E):
    x = faces(G)
    for stage in (1, 3, G.num_ws):
        E.stage = stage
        ws = E(x)
        w, deltas = E.codes(x)
        assert ws.shape == (3, G.num_ws, G.w_dim)
        assert torch.allclose(ws[:, 0], G.mapping.w_avg + w, atol=1e-6)  # layer 0 has no delta
        assert deltas[:, stage:].abs().sum() == 0  # closed layers carry none
        if stage > 1:
            assert deltas[:, 1:stage].abs().sum() > 0
    E.stage = 1
    ws = E(x)
    assert torch.allclose(ws, ws[:, :1].expand_as(ws))  # stage 1: a W code on every layer


def test_any_input_size_is_resized(G, E):
    x = faces(G)
    big = F.interpolate(x, scale_factor=2, mode="nearest")
    assert E(big).shape == E(x).shape
    with pytest.raises(ValueError, match=r"images \[N, 3, H, W\]"):
        E(x[:, :1])


def test_save_and_load_round_trip_in_float16(G, E, tmp_path):
    E.stage = 4
    path = save_encoder(E, tmp_path / "e.pt", meta={"steps": 7})
    E2 = load_encoder(path)
    assert E2.stage == 4 and E2.meta["steps"] == 7
    assert all(p.dtype == torch.float32 for p in E2.parameters())
    x = faces(G)
    with torch.no_grad():
        assert torch.allclose(E2(x), E(x), atol=5e-2 * float(E(x).abs().max()))
    assert torch.equal(E2.w_avg, E.w_avg)  # w_avg stays float32 exactly


def test_load_refuses_other_files(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a facelab encoder.*python -m facelab.train.encoder"):
        load_encoder(tmp_path / "x.pt")


def test_encode_checks_the_generator(G, E):
    x = faces(G)
    ws = enc.encode(E, x, G=G, batch_size=2)
    assert ws.shape == (3, G.num_ws, G.w_dim) and not ws.requires_grad
    other = Generator(get_config("tiny"))  # w_avg zero: another generator
    with pytest.raises(ValueError, match="trained for another generator"):
        enc.encode(E, x, G=other)
    wrong = Encoder(G.num_ws - 1, G.w_dim, config=EncoderConfig(resolution=32))
    with pytest.raises(ValueError, match=r"predicts W\+ \[7, 32\]"):
        wrong.check_generator(G)


def test_progressive_schedule():
    cfg = enc.E4EConfig(progressive_start=10, progressive_every=5)
    stages = [enc.progressive_stage(s, 6, cfg) for s in (0, 9, 10, 14, 15, 30, 100)]
    assert stages == [1, 1, 2, 2, 3, 6, 6]


def test_loss_terms_follow_the_config(G, E):
    x = faces(G)
    D = enc.LatentDiscriminator(G.w_dim)
    E.stage = 1
    ws = E(x)
    recon = G.synthesis(ws, noise_mode="const")
    mse = lambda a, b: (a - b).square().mean((1, 2, 3))  # noqa: E731
    _, terms = enc.e4e_loss(x, recon, ws, E, enc.E4EConfig(), perceptual=mse, D=D)
    assert set(terms) == {"l2", "lpips", "w_disc"}  # no identity net given, no deltas open, latent 0 (e4e)
    E.stage = 3
    ws = E(x)
    total, terms = enc.e4e_loss(x, recon, ws, E, enc.E4EConfig(latent=1.0), w_true=ws.detach() + 1)
    assert set(terms) == {"l2", "delta", "latent"} and terms["latent"] == pytest.approx(1.0)
    assert total.requires_grad
    with pytest.raises(ValueError, match="E4EConfig.mix is a probability"):
        enc.E4EConfig(mix=2.0)


def test_training_moves_codes_towards_the_true_latents(G, tmp_path):
    """A few steps with the latent pull (no perceptual/identity terms: fast) lower the latent loss,
    and a second call resumes from the checkpoint instead of starting over."""
    from facelab.train.encoder import train

    class World:  # the parts train() uses
        name, crop, device = "tiny", "chip", torch.device("cpu")

    World.G = G
    cfg = enc.E4EConfig(lpips=0, id=0, w_disc=0.1, latent=1.0, lr=1e-3, batch=4, progressive_start=20,
                        progressive_every=5)
    torch.manual_seed(0)
    E = train(tmp_path, World, cfg, steps=40, progress=False, every=20)
    hist = [h["latent"] for h in torch.load(tmp_path / "checkpoint.pt", weights_only=True)["history"]]
    assert sum(hist[-8:]) / 8 < sum(hist[:8]) / 8
    assert E.stage == enc.progressive_stage(40, G.num_ws, cfg) == 6
    from facelab.train import encoder as tenc
    steps, draw = [], tenc.training_faces
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tenc, "training_faces", lambda *a: steps.append(1) or draw(*a))
        E = train(tmp_path, World, cfg, steps=45, progress=False)
    assert E.meta["steps"] == 45 and len(steps) == 5  # steps 41-45: a run that started over would take 45
    with pytest.raises(ValueError, match="another E4EConfig"):
        train(tmp_path, World, cfg.replace(lr=1e-2), steps=50, progress=False)
    with pytest.raises(ValueError, match=r"trained with --seed 0; resume it with that seed"):  # was silently seed 0's
        train(tmp_path, World, cfg, steps=50, progress=False, seed=1)



def test_a_constant_rate_run_lengthened_and_annealed_is_the_fresh_annealed_run(G, tmp_path):
    """``anneal_steps`` (``--anneal-steps``): a run resumed onto an annealed tail is bitwise the fresh
    run with that schedule; annealing a step already taken, or an anneal longer than the run, is refused."""
    from facelab.train import encoder as tenc

    class World:
        name, crop, device = "tiny", "chip", torch.device("cpu")

    World.G = G
    cfg = enc.E4EConfig(lpips=0, id=0, w_disc=0.1, latent=1.0, lr=1e-3, batch=2, progressive_start=2,
                        progressive_every=2)
    fresh = tenc.train(tmp_path / "fresh", World, cfg, steps=8, anneal_steps=4, progress=False)
    tenc.train(tmp_path / "resumed", World, cfg, steps=4, progress=False)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    del ckpt["schedule"]  # as written before the schedule existed: a constant rate
    torch.save(ckpt, tmp_path / "resumed" / "checkpoint.pt")
    steps, draw = [], tenc.training_faces
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tenc, "training_faces", lambda *a: steps.append(1) or draw(*a))
        resumed = tenc.train(tmp_path / "resumed", World, cfg, steps=8, anneal_steps=4, progress=False)
    assert resumed.meta["lr_anneal_steps"] == 4 and resumed.meta["steps"] == 8 and len(steps) == 4  # resumed
    torch.testing.assert_close(fresh.state_dict(), resumed.state_dict(), rtol=0, atol=0)  # same keys, same bits
    with pytest.raises(ValueError, match="took step 5 at lr .*anneal only steps not yet taken"):
        tenc.train(tmp_path / "resumed", World, cfg, steps=12, anneal_steps=8, progress=False)
    with pytest.raises(ValueError, match="--anneal-steps must be in 0..--steps"):
        tenc.train(tmp_path / "other", World, cfg, steps=4, anneal_steps=5, progress=False)


def test_a_run_can_start_from_an_encoder_of_an_earlier_generator(G, E, tmp_path):
    """``init`` (``--init``): a world trained further keeps the old encoder's weights and open layers
    but its own ``w_avg``; the start is recorded and a resume under another start is refused."""
    from facelab.train.encoder import train

    class World:
        name, crop, device = "tiny", "chip", torch.device("cpu")

    World.G = G
    E.meta = {"steps": 500, "path": "old.pt"}
    with torch.no_grad():
        E.w_avg.add_(1.0)  # trained for another generator: another w_avg
    cfg = enc.E4EConfig(lpips=0, id=0, w_disc=0.0, latent=1.0, lr=0.0, batch=2, progressive_start=100,
                        progressive_every=50)
    E2 = train(tmp_path, World, cfg, steps=2, progress=False, init=E)
    assert torch.equal(E2.w_avg, G.mapping.w_avg)
    assert E2.stage == enc.progressive_stage(502, G.num_ws, cfg) > enc.progressive_stage(2, G.num_ws, cfg)
    assert E2.meta["init"] == {"from": "old.pt", "steps": 500} and E2.meta["steps"] == 2
    same = {k: v for k, v in E.state_dict().items() if k != "w_avg"}
    assert all(torch.equal(v, E2.state_dict()[k]) for k, v in same.items())  # lr 0: the weights are init's
    E.meta = {"steps": 9}
    with pytest.raises(ValueError, match="started from .*not from"):
        train(tmp_path, World, cfg, steps=3, progress=False, init=E)
    from facelab.train import encoder as tenc
    steps, draw = [], tenc.training_faces
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tenc, "training_faces", lambda *a: steps.append(1) or draw(*a))
        assert train(tmp_path, World, cfg, steps=3, progress=False).meta["init"]["steps"] == 500
    assert len(steps) == 1  # resumed at step 2: the third step only

def test_pti_takes_encoder_pivots(G, E):
    x = faces(G, n=2)
    res = pti.tune(G, x, pivots="encoder", encoder=E, config=pti.PTIConfig(tune_steps=2, early_stop=None),
                   perceptual=lambda a, b: (a - b).square().mean((1, 2, 3)), progress=False)
    assert torch.allclose(res.pivots, enc.encode(E, x), atol=1e-6)
    with pytest.raises(ValueError, match="pass encoder=world.encoder"):
        pti.tune(G, x, pivots="encoder", progress=False)  # an unnamed generator has no shipped encoder
    with pytest.raises(ValueError, match="pivots must be latents, a Projection, 'encoder' or None"):
        pti.tune(G, x, pivots="e4e", progress=False)
    with pytest.raises(ValueError, match="encoder= is used with pivots='encoder' only"):
        pti.tune(G, x, encoder=E, progress=False)  # would project instead, ignoring E


def test_a_generator_loaded_by_name_finds_its_shipped_encoder():
    from facelab.hub import load_generator

    G = load_generator("world64", device="cpu")  # as the README's walk loads it
    x = faces(G, n=1)
    assert torch.equal(pti.encoder_pivots(G, x), enc.encode(load_encoder("encoder_world64", device="cpu"), x))


def test_world_artifacts_load_by_the_world_s_name_as_boundaries_do():
    from facelab.mapper import load_mapper

    for load, kind in ((load_encoder, "encoder"), (load_mapper, "mapper")):
        by_world, by_registry = load("world64", device="cpu"), load(f"{kind}_world64", device="cpu")
        torch.testing.assert_close(by_world.state_dict(), by_registry.state_dict(), rtol=0, atol=0)
        assert load(device="cpu").meta == by_world.meta  # world64 is the default


def test_recard_reevaluates_the_shipped_encoder_without_changing_its_weights(G, E, tmp_path, monkeypatch):
    """``--recard`` (a build with a new H keeps the encoder): the shipped weights stay bitwise, its file
    records the new evaluation, it is shipped again (new sha) and its card section is rewritten."""
    from facelab.train import encoder as tenc

    class World:
        name, device = "tiny", torch.device("cpu")

    World.G = G
    path = tmp_path / "encoder_tiny.pt"
    save_encoder(E, path, meta={"steps": 7})
    report = {"world faces": [{"n": 2, "method": "encoder", "mse": 0.1, "mse_worst": 0.2, "perceptual": 0.5,
                               "identity": 0.9, "w_distance": 1.0, "edit_change": {"age": 1.0}, "edit_identity": 0.9,
                               "seconds_per_face": 0.01}]}
    monkeypatch.setattr(tenc, "load_world", lambda *a, **k: World)
    monkeypatch.setattr(tenc, "PACKAGE_WEIGHTS", tmp_path)
    monkeypatch.setattr(tenc, "evaluate", lambda world, E_: report)
    shipped = []
    monkeypatch.setattr(tenc, "ship_file", lambda src, name, **kw: shipped.append((Path(src), name)))
    monkeypatch.setattr(tenc, "card_markdown", lambda rep, meta: f"recarded {meta['steps']} steps")
    (tmp_path / "encoder_tiny.md").write_text("# card\n")
    before = load_encoder(path).state_dict()
    tenc.main(["--world", "tiny", "--recard", "--device", "cpu"])
    after = load_encoder(path)
    assert all(torch.equal(before[k], v) for k, v in after.state_dict().items())
    assert after.meta["evaluation"] == report and after.meta["steps"] == 7
    assert shipped == [(path, "encoder_tiny")]
    assert "recarded 7 steps" in (tmp_path / "encoder_tiny.md").read_text()
    path.unlink()
    with pytest.raises(SystemExit, match="no shipped encoder at .*train one with"):
        tenc.main(["--world", "tiny", "--recard", "--device", "cpu"])


def test_a_variant_is_trained_with_set_and_judged_with_report_without_shipping(G, tmp_path, monkeypatch):
    """``--set disc_lr=2e-4 --report``: the run's config carries the change, its evaluation lands in the
    run folder, and nothing is shipped."""
    from facelab.train import encoder as tenc

    class World:
        name, crop, device = "tiny", "chip", torch.device("cpu")

    World.G = G
    report = {"world faces": [{"n": 2, "method": "encoder", "w_distance": 1.0}]}
    monkeypatch.setattr(tenc, "load_world", lambda *a, **k: World)
    monkeypatch.setattr(tenc, "PRESETS", {"cpu": enc.E4EConfig(lpips=0, id=0, latent=1.0, batch=2,
                                                                progressive_start=2, progressive_every=1)})
    monkeypatch.setattr(tenc, "evaluate", lambda world, E_: report)
    monkeypatch.setattr(tenc, "ship_file", lambda *a, **k: pytest.fail("--report must not ship"))
    monkeypatch.setattr(tenc, "card_markdown", lambda rep, meta: f"{meta['steps']} steps, disc_lr {meta['config']['disc_lr']}")
    out = tmp_path / "variant"
    tenc.main(["--world", "tiny", "--out", str(out), "--steps", "3", "--set", "disc_lr=2e-4", "--set", "r1=0",
               "--report", "--device", "cpu"])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["disc_lr"] == 2e-4
    assert (out / "card.md").read_text().strip() == "3 steps, disc_lr 0.0002"
    assert json.loads((out / "evaluation.json").read_text()) == report
    with pytest.raises(SystemExit, match="--set takes NAME=VALUE"):
        tenc.main(["--world", "tiny", "--out", str(out), "--set", "disc_lr"])
    with pytest.raises(SystemExit, match="E4EConfig has no dics_lr"):
        tenc.main(["--world", "tiny", "--out", str(out), "--set", "dics_lr=1"])


def test_the_cards_command_trains_the_cards_encoder(tmp_path, monkeypatch):
    """The card's "Produced by" command, run, trains with the recorded steps, annealed tail, warm start and
    E4EConfig (the defaults alone would train another encoder and ship it over the one the card describes)."""
    import shlex

    from facelab.train import encoder as tenc

    cfg = tenc.PRESETS["cpu"].replace(disc_lr=2e-4, batch=4)
    meta = {"world": "tiny", "steps": 20000, "lr_anneal_steps": 3500, "init": {"from": "enc-v2.pt", "steps": 9},
            "config": cfg.to_dict()}
    cmd = tenc.ship_command(meta)
    assert cmd.startswith("python -m facelab.train.encoder ") and cmd.endswith(" --ship")
    seen = []

    def stop(out, world, c, **kw):
        seen.append((c, kw["steps"], kw["anneal_steps"], kw["init"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(tenc, "load_world", lambda *a, **k: type("World", (), {"device": torch.device("cpu")}))
    monkeypatch.setattr(tenc, "load_start", lambda path, device: Path(path).name)
    monkeypatch.setattr(tenc, "train", stop)
    with pytest.raises(KeyboardInterrupt):
        tenc.main(shlex.split(cmd)[3:] + ["--out", str(tmp_path)])
    assert seen == [(cfg, 20000, 3500, "enc-v2.pt")]
    bare = tenc.ship_command({"world": "w", "steps": 5, "config": tenc.PRESETS["cpu"].to_dict()})
    assert bare == "python -m facelab.train.encoder --world w --steps 5 --ship"


def test_held_out_faces_are_the_same_whatever_the_callers_random_state(G):
    from facelab.train.encoder import held_out

    torch.manual_seed(1)
    ws, a = held_out(G, 3, seed=10_000)
    after_a = torch.rand(1)
    torch.manual_seed(2)
    _, b = held_out(G, 3, seed=10_000)
    torch.manual_seed(1)
    assert torch.equal(a, b) and torch.equal(torch.rand(1), after_a)  # the caller's RNG is not consumed
    assert not torch.equal(a, held_out(G, 3, seed=10_001)[1]) and ws.shape == (3, G.num_ws, G.w_dim)
