"""Train the Latent-to-Latent mapper on the world (no paired data: H and the identity net supervise).

    python -m facelab.train.mapper --out runs/mapper --steps 2000          # resumable, Ctrl-C safe
    python -m facelab.train.mapper --out runs/mapper --steps 10000 --lr-anneal-steps 4000 --batch-size 8 \
        --lr 3e-4 --ship   # the shipped recipe (facelab.train.build's MAPPER) -> facelab/weights/mapper_world64.*

Each step draws a batch of world latents (z ~ N(0, I) mapped with truncation ``psi`` and broadcast
to W+), picks 1..``max_attributes`` attributes per latent and a change for each, uniform in
[-``max_change``, ``max_change``] standard deviations, completes it with the attribute correction
(see :mod:`facelab.mapper`), and takes one Adam step on the five weighted losses. H and the
identity network are frozen; G is frozen (its noise is fixed, ``noise_mode="const"``).

Our one departure from the paper, stated: the output is residual (``w' = w + g(w, Δa)``, the last
layer initialised at zero) so the mapper starts as the identity map; with a few thousand CPU steps
a plain ``w' = g(w, Δa)`` spends most of its budget learning to copy ``w``. ``--plain`` trains the
paper's form.

Checkpoints (``last.pt``, every ``--every`` steps and on Ctrl-C / SIGTERM) hold the mapper, the
optimizer and the RNG states; rerunning the same command resumes, and the initial weights follow
the config's seed, so a resumed run is bitwise the run a fresh one of that length would be.
``--lr-anneal-steps N`` lowers the learning rate by a half cosine to 0 over the run's last N steps;
a constant-lr run can be lengthened and annealed afterwards (resuming checks that every step already
taken keeps its rate).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..hub import (PACKAGE_WEIGHTS, atomic_torch_save, load_file, load_generator, load_regressor, ship_file,
                   state_sha256)
from ..latents import sample_ws
from ..mapper import LatentMapper, MapperConfig, correction_matrix, load_mapper, save_mapper
from ..utils import get_device, write_card_section
from .loop import check_schedule, run_main, saving_on_exit

LOSSES = ("attribute", "cycle", "identity", "neighbourhood", "face_identity")


class Frozen:
    """The frozen networks a mapper trains through: G, H (columns of the mapper's attributes), identity."""

    def __init__(self, G, H, identity=None, attributes=()):
        self.G, self.H = G, H
        self.columns = [H.index(a) for a in attributes]
        if identity is None:  # dlib embeddings of chips cut from G's crop
            from ..metrics import generator_crop, identity_embedding
            crop = generator_crop(G)
            identity = lambda images: identity_embedding(images, align=crop)  # noqa: E731
        self.identity = identity

    def render(self, ws):
        return self.G.synthesis(ws, noise_mode="const")

    def attrs(self, images):
        return self.H(images)[:, self.columns]


@torch.no_grad()
def world_statistics(frozen: Frozen, *, n: int = 4000, psi: float = 1.0, seed: int = 0, batch: int = 200) -> dict:
    """W mean/std and H's attribute mean, std, 0.5 %/99.5 % quantiles and correlation on n world faces."""
    G = frozen.G
    ws = sample_ws(G, n, psi=psi, generator=torch.Generator().manual_seed(seed), batch_size=batch)[:, 0]  # [n, w_dim]
    a = torch.cat([frozen.attrs(frozen.render(w[:, None].expand(-1, G.num_ws, -1))) for w in ws.split(batch)]).cpu()
    return {"w_mean": ws.mean(0).cpu(), "w_std": ws.std(0).cpu(), "attr_mean": a.mean(0), "attr_std": a.std(0),
            "attr_min": a.quantile(0.005, 0), "attr_max": a.quantile(0.995, 0), "labels": a}


def draw_edits(n: int, k: int, cfg: MapperConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta [n, k] standardised, named [n, k] bool): 1..max_attributes attributes per row."""
    counts = torch.randint(1, cfg.max_attributes + 1, (n,), generator=gen)
    order = torch.rand(n, k, generator=gen).argsort(1)
    named = torch.zeros(n, k, dtype=torch.bool)
    named.scatter_(1, order, torch.arange(k)[None].expand(n, k) < counts[:, None])
    delta = (torch.rand(n, k, generator=gen) * 2 - 1) * cfg.max_change
    return delta * named, named


def losses(m: LatentMapper, frozen: Frozen, ws: torch.Tensor, delta: torch.Tensor, named: torch.Tensor) -> dict:
    """The five losses of the paper for one batch (``ws`` [N, num_ws, w_dim], W broadcast or W+)."""
    with torch.no_grad():
        img0 = frozen.render(ws)
        a0 = frozen.attrs(img0)
        id0 = frozen.identity(img0)
    w1 = m(ws, delta)  # [N, num_ws, w_dim]
    img1 = frozen.render(w1)
    target = m.target(a0, delta, named)
    scale = m.w_std  # compare latents in standardised units
    return {
        "attribute": F.mse_loss(frozen.attrs(img1) / m.attr_std, target / m.attr_std),
        "cycle": F.l1_loss(m(w1, -delta) / scale, ws / scale),
        "identity": F.l1_loss(m(ws, torch.zeros_like(delta)) / scale, ws / scale),
        "neighbourhood": ((w1 - ws) / scale).square().mean(),
        "face_identity": (1 - (frozen.identity(img1) * id0).sum(1)).mean(),
    }


SCHEDULE = ("steps", "lr_anneal_steps")
EVAL_SEED = 12345  # the held-out latents of every card's evaluation


def check_resumable(ckpt: dict, cfg: MapperConfig, path: Path) -> None:
    """Refuse to resume ``ckpt`` with ``cfg`` unless continuing it is the run a fresh ``cfg`` would be.

    Only the length and the annealing may change, and only where the learning rates of the steps
    already taken stay what they were (a constant-lr run can be lengthened and then annealed).
    """
    old = {"lr_anneal_steps": 0, **ckpt["config"]}  # checkpoints from before the schedule existed
    new = cfg.to_dict()
    other = sorted(k for k in old.keys() | new.keys() if k not in SCHEDULE and old.get(k) != new.get(k))
    if other:
        raise ValueError(f"{path} was trained with another config ({', '.join(other)}); use a new --out or "
                         "the same flags (only --steps and --lr-anneal-steps may change)")
    check_schedule(path, ckpt["step"], MapperConfig.from_dict(old).lr_at, cfg.lr_at,
                   f"--steps {cfg.steps} --lr-anneal-steps {cfg.lr_anneal_steps}")


class TrainedThroughOther(ValueError):
    """A mapper checkpoint trained through another G or H than the one given (e.g. after a new H)."""


def train(out: Path, cfg: MapperConfig, *, G=None, H=None, identity=None, device=None, every: int = 100,
          stats_n: int = 4000, progress: bool = True) -> LatentMapper:
    """Train (or resume) a mapper in ``out``; ``stats_n`` world faces give the W and attribute statistics."""
    device = get_device(device)
    G = G if G is not None else load_generator("world64", device=device)
    H = H if H is not None else load_regressor(device=device)
    frozen = Frozen(G, H, identity, cfg.attributes)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    through = state_sha256(G, H)  # a resume through another G or a retrained H is no resume
    if ckpt_path.exists():
        ckpt = load_file(ckpt_path)
        check_resumable(ckpt, cfg, ckpt_path)
        if ckpt.get("through", through) != through:  # checkpoints from before 2026-12-07 did not record it
            raise TrainedThroughOther(f"{ckpt_path} was trained through another generator or H (a retrained H?); "
                                      "resuming it would ship a mapper of the old ones: use a new --out, or "
                                      "delete the folder to train afresh")
        stats = ckpt["stats"]
    else:
        ckpt, stats = None, world_statistics(frozen, n=stats_n, psi=cfg.psi, seed=cfg.seed + 1)
    corr = correction_matrix(stats["labels"], min_corr=cfg.correction_min_corr)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow cfg.seed, not the caller's RNG
        torch.manual_seed(cfg.seed)
        m = LatentMapper(G.num_ws, G.w_dim, cfg, correction=corr,
                         **{k: v for k, v in stats.items() if k != "labels"}).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history, seconds = 0, {k: [] for k in (*LOSSES, "total")}, 0.0
    if ckpt is not None:
        m.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        step, history, seconds = ckpt["step"], ckpt["history"], ckpt["seconds"]

    def save():
        atomic_torch_save({"config": cfg.to_dict(), "stats": stats, "state_dict": m.state_dict(),
                           "optimizer": opt.state_dict(), "rng": gen.get_state(), "step": step,
                           "history": history, "seconds": seconds, "through": through}, ckpt_path)

    weights = {k: getattr(cfg, f"{k}_weight") for k in LOSSES}
    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.steps, initial=step, desc="mapper", unit="step", disable=not progress)
    with saving_on_exit(save) as stop:
        while step < cfg.steps and not stop["now"]:
            t0 = time.time()
            z = torch.randn(cfg.batch_size, G.z_dim, generator=gen).to(device)
            with torch.no_grad():
                ws = G.mapping(z, truncation_psi=cfg.psi)
            delta, named = (t.to(device) for t in draw_edits(cfg.batch_size, len(cfg.attributes), cfg, gen))
            parts = losses(m, frozen, ws, delta, named)
            total = sum(weights[k] * v for k, v in parts.items() if weights[k])
            opt.zero_grad(set_to_none=True)
            total.backward()
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step)
            opt.step()
            step += 1
            seconds += time.time() - t0
            for k, v in parts.items():
                history[k].append(round(v.item(), 5))
            history["total"].append(round(total.item(), 5))
            bar.update()
            bar.set_postfix({k[:5]: f"{v:.3f}" for k, v in parts.items()})
            if step % every == 0:
                save()
    bar.close()
    m.meta = {"steps": step, "train_seconds": round(seconds, 1), "device": str(device),
              "history_tail": {k: v[-100:] for k, v in history.items()}}
    return m.eval()


# --- evaluation for the model card --------------------------------------------------------


@torch.no_grad()
def evaluate(m: LatentMapper, frozen: Frozen, *, n: int = 256, step: float = 1.0, seed: int = EVAL_SEED) -> dict:
    """On n held-out latents: for each attribute, ask for +step std; measure what H and identity see.

    Returns per attribute: the achieved change of the target (std units), the mean absolute change
    of the other attributes beyond what the correction asked for (std units), identity similarity
    between before and after, and the mapper's f(w, 0) and cycle errors (standardised latent units).
    """
    G, dev = frozen.G, m.w_mean.device
    ws = sample_ws(G, n, psi=m.config.psi, generator=torch.Generator().manual_seed(seed))  # [n, num_ws, w_dim]
    img0 = frozen.render(ws)
    a0, id0 = frozen.attrs(img0), frozen.identity(img0)
    k = len(m.attributes)
    rows = {}
    for j, a in enumerate(m.attributes):
        delta = torch.zeros(n, k, device=dev)
        delta[:, j] = step
        named = delta != 0
        w1 = m(ws, delta)
        img1 = frozen.render(w1)
        change = (frozen.attrs(img1) - a0) / m.attr_std  # [n, k]
        asked = m.corrected(delta, named)
        others = [i for i in range(k) if i != j]
        rows[a] = {"target_change": round(float(change[:, j].mean()), 3),
                   "other_change": round(float((change - asked)[:, others].abs().mean()), 3),
                   "identity": round(float((frozen.identity(img1) * id0).sum(1).mean()), 3),
                   "cycle_error": round(float(((m(w1, -delta) - ws) / m.w_std).abs().mean()), 4)}
    zero = ((m(ws, torch.zeros(n, k, device=dev)) - ws) / m.w_std).abs().mean()
    return {"n": n, "step_std": step, "per_attribute": rows, "zero_edit_error": round(float(zero), 4)}


def card_markdown(report: dict, meta: dict, cfg: MapperConfig) -> str:
    rows = ["| attribute | asked (std) | achieved (std) | other attributes, mean abs. change beyond the correction (std) | "
            "identity similarity | cycle error |", "|---|---|---|---|---|---|"]
    for a, r in report["per_attribute"].items():
        rows.append(f"| {a} | +{report['step_std']:g} | {r['target_change']:+.3f} | {r['other_change']:.3f} | "
                    f"{r['identity']:.3f} | {r['cycle_error']:.4f} |")
    anneal = f", the last {cfg.lr_anneal_steps} steps annealed to 0 by a half cosine" if cfg.lr_anneal_steps else ""
    return "\n".join([
        f"Trained {meta['steps']} steps (batch {cfg.batch_size}, Adam lr {cfg.lr:g}{anneal}, depth {cfg.depth}, "
        f"{'residual' if cfg.residual else 'plain'} output) in {meta['train_seconds'] / 60:.1f} min on "
        f"{meta['device']}. Loss weights: " + ", ".join(f"{k} {getattr(cfg, k + '_weight')}" for k in LOSSES) + ".",
        "", f"Held-out evaluation on {report['n']} new world latents, one attribute asked at a time "
        f"(H measures the change; identity = dlib-port cosine similarity before/after):", "", *rows, "",
        f"f(w, 0) error: {report['zero_edit_error']:.4f} (mean |w' - w| in units of W's per-dimension std).",
        "", f"Produced by `{ship_command(cfg)}` (or `--reship`, which re-evaluates the shipped "
        "mapper); the weight matrices are stored in float16 and computed in float32, and the numbers above "
        "were measured with those rounded weights.",
    ])


# MapperConfig fields main() takes as flags (--steps, --batch-size, ...; --plain for residual=False)
FLAG_FIELDS = ("steps", "batch_size", "depth", "lr", "lr_anneal_steps", *(f"{k}_weight" for k in LOSSES))


def ship_command(cfg: MapperConfig) -> str:
    """The command that trains and ships a mapper of ``cfg``: its settings off the defaults, as flags (a
    card's command with the defaults alone would train another mapper and ship it over this one)."""
    default = MapperConfig()
    flags = [f"--{k.replace('_', '-')} {getattr(cfg, k):g}" for k in FLAG_FIELDS
             if getattr(cfg, k) != getattr(default, k)] + ([] if cfg.residual else ["--plain"])
    fixed = [k for k in cfg.to_dict() if k not in (*FLAG_FIELDS, "residual") and getattr(cfg, k) != getattr(default, k)]
    where = f" with {', '.join(fixed)} set in MapperConfig" if fixed else ""
    return " ".join(["python -m facelab.train.mapper", *flags, "--ship"]) + where


def world64_frozen(m: LatentMapper) -> Frozen:
    """The shipped world64 G and H a world64 mapper is evaluated through, on the mapper's device."""
    device = m.w_mean.device
    return Frozen(load_generator("world64", device=device), load_regressor(device=device),
                  attributes=m.config.attributes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/mapper"))
    p.add_argument("--steps", type=int, default=MapperConfig.steps)
    p.add_argument("--batch-size", type=int, default=MapperConfig.batch_size)
    p.add_argument("--depth", type=int, default=MapperConfig.depth)
    p.add_argument("--lr", type=float, default=MapperConfig.lr)
    p.add_argument("--lr-anneal-steps", type=int, default=MapperConfig.lr_anneal_steps,
                   help="the run's last N steps lower the lr by a half cosine to 0 (default 0: constant)")
    p.add_argument("--plain", action="store_true", help="the paper's non-residual output")
    for k in LOSSES:
        p.add_argument(f"--{k.replace('_', '-')}-weight", type=float, default=getattr(MapperConfig, f"{k}_weight"))
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--device", default=None)
    p.add_argument("--ship", action="store_true", help="copy into facelab/weights/ with a model card")
    p.add_argument("--reship", action="store_true",
                   help="no training: re-evaluate the shipped mapper and ship it again (stored float16)")
    p.add_argument("--evaluate", type=Path, default=None, metavar="MAPPER.pt",
                   help="no training: print this mapper's held-out evaluation (e.g. on another --eval-seed)")
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED,
                   help=f"with --evaluate: the seed of its 256 held-out latents (default {EVAL_SEED}, the cards')")
    args = p.parse_args(argv)
    if args.evaluate:
        m = load_mapper(args.evaluate, device=args.device)
        print(json.dumps(evaluate(m, world64_frozen(m), seed=args.eval_seed), indent=2))
        return
    cfg = MapperConfig(steps=args.steps, batch_size=args.batch_size, depth=args.depth, lr=args.lr,
                       lr_anneal_steps=args.lr_anneal_steps,
                       residual=not args.plain, **{f"{k}_weight": getattr(args, f"{k}_weight") for k in LOSSES})
    if args.reship:
        m = load_mapper(device=args.device).requires_grad_(False)
        cfg, args.ship = m.config, True
        args.out.mkdir(parents=True, exist_ok=True)
    else:
        m = train(args.out, cfg, device=args.device, every=args.every)
    path = args.out / "mapper.pt"
    save_mapper(m, path, weight_dtype=torch.float16)  # half the size; see save_mapper
    m = load_mapper(path, device=args.device)  # evaluate what ships, the rounded weights (and that it loads)
    report = evaluate(m, world64_frozen(m))
    m.meta["evaluation"] = report
    save_mapper(m, path, weight_dtype=torch.float16)  # the same weights, now with their evaluation
    print(json.dumps(report, indent=2))
    if args.ship:
        ship_file(path, "mapper_world64", kind="mapper", card="mapper_world64.md",
                  description="Latent-to-Latent mapper for world64 (W+, H attributes)")
        write_card_section(PACKAGE_WEIGHTS / "mapper_world64.md", card_markdown(report, m.meta, cfg))


if __name__ == "__main__":
    run_main(main)
