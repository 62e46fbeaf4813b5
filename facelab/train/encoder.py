"""Train a world's e4e-style encoder on the world's own faces (infinite pairs, no dataset).

    python -m facelab.train.encoder --world world64 --out runs/encoder --minutes 60   # resumable, Ctrl-C safe
    python -m facelab.train.encoder --world world64 --out runs/encoder --ship         # evaluate, then ship
    python -m facelab.train.encoder --world world64 --recard   # re-evaluate the shipped one (a new H)
    python -m facelab.train.encoder --out runs/enc-d --set disc_lr=2e-4 --steps 3716 --report  # a variant, judged

Each step draws a batch of latents (z ~ N(0, I) mapped with truncation ``psi``; with probability
``mix`` a face is a style mix of two latents at a random layer, so W+ codes are seen), renders the
faces with random noise (drawn, like the latents, from the run's own checkpointed generator),
encodes them, renders the codes with the generator's stored noise, and takes one Adam step on
:func:`facelab.encoder.e4e_loss`; the latent discriminator takes one step first (non-saturating
loss, R1 on real ``w`` every 16 steps, as StyleGAN2's lazy regularisation). The generator, the
perceptual network and the identity network are frozen.

Checkpoints (``OUT/checkpoint.pt``, every ``--every`` steps and on Ctrl-C / SIGTERM) hold the
encoder, the discriminator, both optimisers, the RNG, the learning-rate schedule and the history;
rerunning resumes, bitwise the run a fresh one would be (the initial weights follow ``seed``).
``--anneal-steps N`` lowers the encoder's learning rate by a half cosine to 0 over the last N of
``--steps``; a constant-rate run can be lengthened and annealed afterwards. ``--ship``
(world64) evaluates the encoder against W and W+ projection (:func:`evaluate`), writes
``facelab/weights/encoder_world64.pt`` (float16 weights) and the metrics section of its card.
``--set NAME=VALUE`` changes one field of the preset's :class:`~facelab.encoder.E4EConfig` (repeatable;
the checkpoint and the card record the whole config); ``--report`` evaluates a run the same way
without shipping it, into ``OUT/card.md`` and ``OUT/evaluation.json``, to compare with the shipped card.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..encoder import PRESETS, E4EConfig, LatentDiscriminator, e4e_loss, encode, progressive_stage
from ..hub import PACKAGE_WEIGHTS, atomic_torch_save, load_encoder, load_file, save_encoder, ship_file
from ..metrics import default_perceptual, distortion, editability, identity_similarity
from ..nets.encoder import Encoder, EncoderConfig
from ..utils import annealed_lr, get_device, write_card_section
from ..worlds import load_world
from .loop import check_schedule, run_main, saving_on_exit

R1_EVERY = 16  # lazy R1 (StyleGAN2): every 16 discriminator steps, weighted by 16


def training_faces(G, cfg: E4EConfig, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 3, R, R] rendered with random noise, their W+ latents [N, num_ws, w_dim])."""
    n = cfg.batch
    z = torch.randn(2 * n, G.z_dim, generator=gen).to(device)
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=cfg.psi)  # [2N, num_ws, w_dim]
        ws, other = ws[:n].clone(), ws[n:]
        mixed = torch.rand(n, generator=gen) < cfg.mix
        cut = torch.randint(1, G.num_ws, (n,), generator=gen)
        for i in torch.nonzero(mixed).flatten().tolist():
            ws[i, cut[i]:] = other[i, cut[i]:]
        images = G.synthesis(ws, noise=_noise_maps(G, n, gen, device))
    return images, ws


def _noise_maps(G, n: int, gen: torch.Generator, device) -> list[torch.Tensor]:
    """Fresh per-layer noise for ``n`` faces, drawn on ``device`` by a generator seeded from ``gen``
    (so a GPU draws its own, and the checkpointed ``gen`` makes a resumed run the same run)."""
    g = torch.Generator(device).manual_seed(int(torch.randint(2**62, (), generator=gen)))
    return [torch.randn(n, *shape[1:], generator=g, device=device) for shape in G.synthesis.noise_shapes()]


def _discriminator_step(D, opt_D, E_ws: torch.Tensor, G, stage: int, step: int, cfg: E4EConfig,
                        gen: torch.Generator) -> float:
    """One step of the latent discriminator: real = mapped w, fake = the encoder's open layers
    (e4e samples one open layer per face, through a pool of earlier codes; and it takes its R1 step
    separately: see :class:`facelab.encoder.E4EConfig`)."""
    device = E_ws.device
    z = torch.randn(cfg.batch, G.z_dim, generator=gen).to(device)
    with torch.no_grad():
        real = G.mapping(z)[:, 0]  # [N, w_dim]
    fake = E_ws[:, :stage].detach().reshape(-1, E_ws.shape[-1])
    loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
    if step % R1_EVERY == 0 and cfg.r1 > 0:
        real = real.requires_grad_(True)
        (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
        loss = loss + cfg.r1 / 2 * grad.square().sum(1).mean() * R1_EVERY
    opt_D.zero_grad(set_to_none=True)
    loss.backward()
    opt_D.step()
    return float(loss.detach())


def load_start(path: str | Path, device=None) -> Encoder:
    """An encoder to start a run from (``train(..., init=...)``), named in the run's record by its file name."""
    E = load_encoder(path, device=device)
    E.meta["path"] = Path(path).name
    return E


def _starting_point(ckpt: dict | None, ckpt_path: Path, init: Encoder | None, G,
                    arch: EncoderConfig | None) -> tuple[EncoderConfig, dict | None]:
    """A run's architecture and where it started (``{"from", "steps"}`` of ``init``, or None: scratch):
    a checkpoint's own when resuming (refusing another ``init``), else ``init``'s, else ``arch``."""
    start = None if init is None else {"from": init.meta.get("path", "an earlier encoder"),
                                       "steps": int(init.meta.get("steps", 0))}
    if ckpt is not None:
        if init is not None and ckpt.get("init") != start:
            raise ValueError(f"{ckpt_path} started from {ckpt.get('init') or 'scratch'}, not from {start}; "
                             "use a new --out, or resume it without --init")
        return EncoderConfig.from_dict(ckpt["arch"]), ckpt.get("init")
    if init is not None:
        if (init.num_ws, init.w_dim) != (G.num_ws, G.w_dim):
            raise ValueError(f"--init encoder writes {init.num_ws} x {init.w_dim} codes, this generator reads "
                             f"{G.num_ws} x {G.w_dim}; start from an encoder of this generator's family, "
                             "or from scratch")
        return init.config, start
    return arch or EncoderConfig(resolution=min(G.img_resolution, 256)), None  # e4e reads 256 px crops


def _lr_schedule(ckpt: dict | None, path: Path, lr: float, steps: int, anneal_steps: int):
    """(the schedule to record, the encoder's lr per step), checked against the steps ``ckpt`` took."""
    if not 0 <= anneal_steps <= steps:
        raise ValueError(f"--anneal-steps must be in 0..--steps ({steps}), got {anneal_steps}")
    schedule = {"steps": steps, "anneal_steps": anneal_steps}
    lr_at = functools.partial(annealed_lr, lr=lr, **schedule)
    if ckpt is not None:  # checkpoints from before the schedule existed ran at a constant rate
        old = ckpt.get("schedule") or {"steps": ckpt["step"], "anneal_steps": 0}
        check_schedule(path, ckpt["step"], functools.partial(annealed_lr, lr=lr, **old), lr_at,
                       f"--steps {steps} --anneal-steps {anneal_steps}")
    return schedule, lr_at


def _check_resume(ckpt: dict | None, path: Path, cfg: E4EConfig, seed: int) -> None:
    """Refuse to resume ``ckpt`` with another config or seed (a resume with other settings is another run)."""
    if ckpt is not None and ckpt["config"] != cfg.to_dict():
        raise ValueError(f"{path} was trained with another E4EConfig; use a new --out or the same flags")
    if ckpt is not None and ckpt.get("seed", seed) != seed:  # checkpoints from before 2026-12-07 lack it
        raise ValueError(f"{path} was trained with --seed {ckpt['seed']}; resume it with that seed, or use a new --out")


def train(out: Path, world, cfg: E4EConfig, *, steps: int, minutes: float | None = None, arch: EncoderConfig | None = None,
          every: int = 50, seed: int = 0, progress: bool = True, init: Encoder | None = None,
          anneal_steps: int = 0) -> Encoder:
    """Train (or resume) the encoder in ``out/checkpoint.pt`` until ``steps`` or ``minutes`` of this run.

    ``anneal_steps``: the encoder's lr (not the discriminator's) falls by a half cosine to 0 over the
    last so many ``steps``; a resume may change that only for steps not yet taken (:func:`_lr_schedule`).

    ``init``: start a new run from this encoder's weights instead of from scratch, for a world whose
    generator was trained further than the one ``init`` was trained for (the same architecture; a
    drifted W). It keeps this generator's ``w_avg``; the layers ``init`` had opened stay open (the
    progressive schedule counts ``init``'s steps first); the discriminator and both optimisers start
    afresh. The checkpoint and ``E.meta["init"]`` record where it started.
    """
    G, device = world.G, world.device
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_file(ckpt_path) if ckpt_path.is_file() else None
    _check_resume(ckpt, ckpt_path, cfg, seed)
    schedule, lr_at = _lr_schedule(ckpt, ckpt_path, cfg.lr, steps, anneal_steps)
    arch, start = _starting_point(ckpt, ckpt_path, init, G, arch)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow ``seed``, not the caller's RNG
        torch.manual_seed(seed)
        E = Encoder(G.num_ws, G.w_dim, G.mapping.w_avg, arch).to(device)
        D = LatentDiscriminator(G.w_dim).to(device)
    if ckpt is None and init is not None:
        E.load_state_dict({**init.state_dict(), "w_avg": E.w_avg})
    offset = start["steps"] if start else 0  # progressive_stage(offset + step): init's open layers stay open
    opt_E = torch.optim.Adam(E.parameters(), lr=cfg.lr)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.disc_lr)
    gen = torch.Generator().manual_seed(seed)
    step, seconds, history = 0, 0.0, []
    if ckpt is not None:
        E.load_state_dict(ckpt["E"])
        D.load_state_dict(ckpt["D"])
        opt_E.load_state_dict(ckpt["opt_E"])
        opt_D.load_state_dict(ckpt["opt_D"])
        gen.set_state(ckpt["rng"])
        step, seconds, history = ckpt["step"], ckpt["seconds"], ckpt["history"]
    perceptual = default_perceptual(device, align=world.crop)
    identity = lambda a, b: identity_similarity(a, b, align=world.crop)  # noqa: E731

    def save():
        atomic_torch_save({"config": cfg.to_dict(), "arch": E.config.to_dict(), "init": start, "E": E.state_dict(),
                           "D": D.state_dict(), "opt_E": opt_E.state_dict(), "opt_D": opt_D.state_dict(),
                           "rng": gen.get_state(), "step": step, "seconds": seconds, "history": history,
                           "schedule": schedule, "seed": seed}, ckpt_path)

    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=step, desc="encoder", unit="step", disable=not progress)
    t_start = time.time()
    with saving_on_exit(save) as stop:
        while step < steps and not stop["now"] and (minutes is None or time.time() - t_start < 60 * minutes):
            t0 = time.time()
            E.stage = progressive_stage(offset + step, G.num_ws, cfg)
            x, w_true = training_faces(G, cfg, gen, device)
            ws = E(x)
            d_loss = _discriminator_step(D, opt_D, ws, G, E.stage, step, cfg, gen) if cfg.w_disc > 0 else 0.0
            recon = G.synthesis(ws, noise_mode="const")
            total, terms = e4e_loss(x, recon, ws, E, cfg, perceptual=perceptual, identity=identity,
                                    D=D if cfg.w_disc > 0 else None, w_true=w_true)
            opt_E.zero_grad(set_to_none=True)
            total.backward()
            for group in opt_E.param_groups:
                group["lr"] = lr_at(step)
            opt_E.step()
            step += 1
            seconds += time.time() - t0
            history.append({"step": step, "stage": E.stage, "total": round(float(total.detach()), 5), "d": round(d_loss, 5),
                            **{k: round(v, 5) for k, v in terms.items()}})
            bar.update()
            bar.set_postfix(stage=E.stage, **{k: f"{v:.3f}" for k, v in terms.items() if k in ("l2", "lpips", "latent")})
            if step % every == 0:
                save()
    bar.close()
    E.stage = progressive_stage(offset + step, G.num_ws, cfg)
    E.meta = {"world": world.name, "steps": step, "train_seconds": round(seconds, 1), "device": str(device),
              "config": cfg.to_dict(), "stage": E.stage, **({"init": start} if start else {}),
              **({"lr_anneal_steps": anneal_steps} if anneal_steps else {})}
    return E.eval().requires_grad_(False)


# --- evaluation for the model card ----------------------------------------------------------


EDIT_ATTRIBUTES = ("age", "male", "smile")


def _rows(world, name: str, ws: torch.Tensor, noise, recon: torch.Tensor, target: torch.Tensor, seconds: float) -> dict:
    """Distortion of ``recon`` to ``target``; editability of ``ws`` (one distance-std along age, male
    and smile: H's change per latent unit and identity kept, averaged over the three); W-distance."""
    d = distortion(recon.clamp(-1, 1), target, align=world.crop)
    B = world.boundaries("w")
    e = editability(world.G, ws, {a: B[a] for a in EDIT_ATTRIBUTES}, world.H, noise=noise, realism=False)
    mean = lambda metric: sum(e["mean"][a][metric] for a in EDIT_ATTRIBUTES) / len(EDIT_ATTRIBUTES)  # noqa: E731
    return {"method": name, "n": int(target.shape[0]), "mse": float(d["mse"].mean()),
            "mse_worst": float(d["mse"].max()), "perceptual": float(d["perceptual"].mean()),
            "identity": float(d["identity"].mean()), "edit_change": {a: e["mean"][a]["change"] for a in EDIT_ATTRIBUTES},
            "edit_identity": mean("identity"),
            "w_distance": float(e["base"]["w_distance"].mean()), "seconds_per_face": seconds / target.shape[0]}


@torch.no_grad()
def held_out(G, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out world faces and their true W+ codes ``(ws, faces)``, the same on every call:
    latents and per-layer noise both from ``seed`` (the caller's random state is left alone), so cards
    and comparisons of different encoders see the same faces."""
    device = G.mapping.w_avg.device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    ws = G.mapping(z)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return ws, G.synthesis(ws, noise_mode="random")


def evaluate(world, E: Encoder, *, n: int = 32, seed: int = 10_000, photos: bool = True) -> dict:
    """Distortion and editability of the encoder next to W and W+ projection (the world's CPU budgets)
    on ``n`` held-out world faces (seeds ``seed`` ...) and on the bundled photos; seconds per face."""
    from ..photos import sample_photos
    from ..projector import ProjectConfig, project

    G, budget = world.G, world.budget("cpu")
    sets = {"world faces": held_out(G, n, seed)[1]}
    if photos:
        faces = [world.align(p.image) for p in sample_photos().values()]
        if faces:
            sets["photos"] = torch.stack(faces).to(world.device)
    report = {}
    for name, target in sets.items():
        rows = []
        t0 = time.perf_counter()
        ws_e = encode(E, target, G=G)
        t1 = time.perf_counter()
        rows.append(_rows(world, "encoder (one pass)", ws_e, None, G.synthesis(ws_e, noise_mode="const"), target,
                          t1 - t0))
        t0 = time.perf_counter()
        pw = project(G, target, space="w", config=ProjectConfig(steps=budget.project_steps), progress=False)
        t1 = time.perf_counter()
        rows.append(_rows(world, f"W projection ({budget.project_steps} steps)", pw.ws, pw.noise, pw.synthesize(G),
                          target, t1 - t0))
        pp = project(G, target, space="w+", init=pw, config=ProjectConfig(steps=budget.wplus_steps), progress=False)
        rows.append(_rows(world, f"W+ projection (+{budget.wplus_steps} steps from W)", pp.ws, pp.noise,
                          pp.synthesize(G), target, time.perf_counter() - t0))
        report[name] = rows
    return report


def card_markdown(report: dict, meta: dict) -> str:
    init = meta.get("init")
    began = f", starting from an encoder of {init['steps']} steps, {init['from']}," if init else ""
    if meta.get("lr_anneal_steps"):
        began += f" the last {meta['lr_anneal_steps']} steps with the learning rate annealed to 0 by a half cosine;"
    lines = [f"Trained {meta['steps']} steps ({meta['train_seconds'] / 60:.0f} min on {meta['device']}){began} "
             f"progressive stage {meta['stage']} of the generator's layers open; E4EConfig: "
             + ", ".join(f"{k} {v}" for k, v in meta["config"].items()) + ".", ""]
    for name, rows in report.items():
        lines += [f"**{name}** (n = {rows[0]['n']}):", "",
                  "| inversion | MSE ↓ (worst face) | dlib-lpips ↓ | identity ↑ | W-distance | H change per latent "
                  "unit: age / male / smile | identity after edit ↑ | seconds per face |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['mse']:.4f} ({r['mse_worst']:.3f}) | {r['perceptual']:.3f} | "
                  f"{r['identity']:.3f} | {r['w_distance']:.2f} | "
                  + " / ".join(f"{v:.3g}" for v in r["edit_change"].values())
                  + f" | {r['edit_identity']:.3f} | {r['seconds_per_face']:.2f} |" for r in rows]
        lines.append("")
    lines.append("Identity: dlib-port cosine to the target (the encoder was trained through this network, weight "
                 "0.1). Edits: one distance-std along each W boundary on every layer, measured by H "
                 "(`facelab.metrics.editability`); W-distance: Mahalanobis distance of the codes from W (about 1 for a "
                 f"sample of W). Seconds per face on the CPU, batch of all faces. Produced by `{ship_command(meta)}` "
                 "(weights stored in float16, computed in float32; measured with the rounded weights).")
    return "\n".join(lines)


def ship_command(meta: dict) -> str:
    """The command that trains and ships the encoder ``meta`` describes: its world, steps, annealed tail,
    warm start (``--init``, the file it named) and the E4EConfig fields off the cpu preset (``--set``); a
    card's command with the defaults alone would train another encoder and ship it over this one."""
    base, init = PRESETS["cpu"].to_dict(), meta.get("init")
    flags = [f"--world {meta['world']}", f"--steps {meta['steps']}",
             *([f"--anneal-steps {meta['lr_anneal_steps']}"] if meta.get("lr_anneal_steps") else []),
             *([f"--init {init['from']}"] if init else []),
             *(f"--set {k}={v}" for k, v in meta["config"].items() if base.get(k) != v)]
    return " ".join(["python -m facelab.train.encoder", *flags, "--ship"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="world64")
    p.add_argument("--out", type=Path, default=Path("runs/encoder"))
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="E4EConfig preset (paper: e4e's values)")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=None, help="stop this run after so many minutes")
    p.add_argument("--anneal-steps", type=int, default=0,
                   help="the last N of --steps lower the encoder's lr by a half cosine to 0 (default 0: constant)")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--device", default=None)
    p.add_argument("--ship", action="store_true", help="evaluate and copy into facelab/weights/ (world64)")
    p.add_argument("--report", action="store_true",
                   help="evaluate as --ship does, into OUT/card.md and OUT/evaluation.json, without shipping")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                   help="change one E4EConfig field of the preset, e.g. --set disc_lr=2e-4 (repeatable)")
    p.add_argument("--init", type=Path, default=None, metavar="ENCODER.pt",
                   help="start a new run from this encoder (trained for an earlier checkpoint of the same generator)")
    p.add_argument("--recard", action="store_true",
                   help="re-evaluate the shipped encoder and rewrite its card, no training (after a new H or new "
                        "boundaries: the encoder is not trained through them, its edit columns are measured with them)")
    args = p.parse_args(argv)
    if args.report and args.ship:
        p.error("--report evaluates without shipping and --ship evaluates and ships: pick one")
    world = load_world(args.world, device=get_device(args.device))
    if args.recard:
        path = PACKAGE_WEIGHTS / f"encoder_{world.name}.pt"
        if not path.is_file():
            raise SystemExit(f"no shipped encoder at {path}; train one with: python -m facelab.train.encoder --ship")
        ship(world, load_encoder(path, device=world.device), path)
        return
    cfg = with_overrides(PRESETS[args.preset], args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    init = None if args.init is None else load_start(args.init, world.device)
    E = train(args.out, world, cfg, steps=args.steps, minutes=args.minutes, every=args.every, init=init,
              anneal_steps=args.anneal_steps)
    path = args.out / "encoder.pt"
    save_encoder(E, path, meta=E.meta)
    E = load_encoder(path, device=world.device)  # evaluate what ships: the rounded weights
    if args.report:
        report = evaluate(world, E)
        (args.out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "card.md").write_text(card_markdown(report, E.meta) + "\n")
        print(f"encoder: {path} ({E.meta['steps']} steps) evaluated into {args.out / 'card.md'}; not shipped")
        return
    if not args.ship:
        print(f"encoder: {path} ({E.meta['steps']} steps); --ship evaluates it and ships it")
        return
    ship(world, E, path)


def with_overrides(cfg: E4EConfig, overrides: list[str]) -> E4EConfig:
    """``cfg`` with each ``NAME=VALUE`` applied, VALUE read as the field's type (int or float)."""
    changes = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes NAME=VALUE (e.g. --set disc_lr=2e-4), got {item!r}")
        kind = type(getattr(cfg, name, 0.0))
        try:
            changes[name] = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        except ValueError:
            raise SystemExit(f"--set {name}: {value!r} is not {'an integer' if kind is int else 'a number'}") from None
    try:
        return cfg.replace(**changes)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"--set: {e}") from None


def ship(world, E: Encoder, path: Path) -> None:
    """Evaluate ``E`` (saved at ``path``), record the evaluation in its file, ship it, rewrite its card."""
    report = evaluate(world, E)
    E.meta["evaluation"] = report
    save_encoder(E, path, meta=E.meta)  # its weights are float16 values already: saving again is exact
    print(json.dumps(report, indent=2))
    name = f"encoder_{world.name}"
    ship_file(path, name, kind="encoder", card=f"{name}.md",
              description=f"e4e-style encoder for {world.name}: face -> W+ near W")
    write_card_section(PACKAGE_WEIGHTS / f"{name}.md", card_markdown(report, E.meta))


if __name__ == "__main__":
    run_main(main)
