"""Build every artifact a world needs with one command (issues #17 and #18).

    python -m facelab.train.build NAME [--generator PATH|NAME [--resolution R]] [--home DIR] [--crop C]
        [--budget PRESET.FIELD=N ...]
    python -m facelab.train.build world64 --ship [--generator NEW.pt] [--work DIR]
        [--n-samples N] [--boundary-samples N] [--boundary-c C]
        [--h-epochs N] [--h-lr LR] [--h-width W] [--h-weight A=W] [--h-init H.pt] [--h-test N]
        [--mapper-steps N [--mapper-anneal-steps N]]
        [--encoder-steps N [--encoder-anneal-steps N] [--encoder-init E.pt] | --keep-encoder]
        [--device D] [--only STAGE | --from STAGE]

Stages, in order: ``label`` (render N faces and label them with the teacher labelers) -> ``h`` (train
the attribute regressor H for this world, with the teacher's mirror ceiling; ``--h-test N`` also
judges it on N fresh faces of the next seed, :func:`facelab.train.regressor.test`) -> ``boundaries``
(InterFaceGAN boundaries in W and Z, on H's scores) -> ``mapper`` (the Latent-to-Latent mapper
through H) -> ``encoder`` (the e4e-style encoder, :mod:`facelab.train.encoder`, CPU preset) ->
``cards``. Each stage leaves a stamp ``.done-STAGE`` in the work folder; a rerun skips stamped
stages unless ``--from`` or ``--only`` names them, and the trainers inside resume from their own
checkpoints, so an interrupted build continues where it stopped. Wall time per stage goes to
``build.json``; each stage shows its own progress bar.

Two destinations, one pipeline:

- **A world folder** (default): ``$FACELAB_HOME/worlds/NAME/`` receives ``generator.pt`` (from
  ``--generator``, or NAME itself when it names a generator, as ``ffhq`` does: a facelab file, an
  NVIDIA network pickle read as data, or a registry name;
  ``--resolution`` cuts it to a coarser block, :func:`facelab.nets.stylegan2.lower_resolution`) and
  every artifact; ``cards`` writes ``world.md`` and ``world.json`` (format ``facelab.world/1``), which
  :func:`facelab.worlds.load_world` reads. The world's face crop (how photos are aligned for it)
  follows its source, :func:`facelab.worlds.crop_of`: ``ffhq`` for NVIDIA's networks, ``world`` for
  facelab's; ``--crop`` overrides it, and ``build.json`` keeps it for later runs. ``--budget
  cpu.project_steps=20`` (repeatable) overrides one field of the world's step budgets
  (:class:`facelab.worlds.Budget`) in ``world.json``; ``build.json`` keeps those too, and a
  finished build given new budgets reruns only ``cards``, which writes them. ``make
  test-worlds`` builds ``mini32`` this way, with small budgets, and runs every notebook on it.
- **The package's own world** (``world64 --ship``): ``--generator`` (optional) replaces
  ``facelab/weights/world64.pt``; each stage then ships its artifact into ``facelab/weights/``
  through its trainer's own ``--ship`` path, which rewrites that artifact's model card; ``cards``
  re-evaluates the world itself (``facelab.train.evaluate``: its card, ``docs/world64``'s figures and
  ``metrics.json``) and judges issue #17's targets (:mod:`facelab.train.targets`).
  Work files and stamps go to ``--work`` (default ``runs/build/world64``). Afterwards re-execute the
  notebooks (``make notebooks``) and reread their verdict prose: it describes the old numbers.

The ``label`` stage warns when the teacher's detector finds a face in fewer than half of the faces: a
briefly trained world draws blobs that MTCNN does not detect, and then H and everything after it
have little to learn from. Faces are rendered and labelled on ``--device`` in batches sized by pixel
count (:func:`facelab.train.regressor.label`), in float32. The faces' latents are the same on any
device; their per-layer noise comes from the device's random generator, so a GPU's faces differ from a
CPU's in fine detail (and their labels with them, a little).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from ..hub import atomic_copy, atomic_write
from ..worlds import ARTIFACTS, CROPS, budget_of, crop_of, worlds_dir, write_world_json
from .loop import run_main

STAGES = ("label", "h", "boundaries", "mapper", "encoder", "cards")
SHIPPED_WORLD = "world64"  # the world whose artifacts live in facelab/weights/
# The shipped mapper's settings (mapper_world64.md), used by every build.
MAPPER = {"batch_size": 8, "lr": 3e-4, "lr_anneal_steps": 4000}
# Its steps: at batch 8 world64's mapper was still learning at the paper's 2000 (H-measured delivery
# of a +1 std ask, age / male / smile: 0.45 / 0.35 / 0.38 at 2000 steps, 0.63 / 0.52 / 0.48 at 6000
# at a constant lr; at 10 000 male fell back, 0.87 / 0.46 / 0.54). Annealing the lr over 2000 more
# steps after 6000 gave 0.85 / 0.60 / 0.56, with a fifth of the cycle error and a tenth of f(w, 0)'s;
# over 4000 after 6000, 0.88 / 0.61 / 0.60 (higher on a second held-out draw too), so the build trains
# 10 000, the last 4000 annealed.
MAPPER_STEPS = 10000
# The encoder's annealed share by default: world64's encoders annealed their last 2800 of 14 460 steps,
# then 3500 of 20 000 (the world card's command gives both counts).
ENCODER_ANNEAL_SHARE = Fraction(1, 5)
# The boundaries' SVM C. InterFaceGAN's reference fits C = 1 on 500 000 latents; world64's 100 000
# (2 000 extremes per side in a 128-d W) give at C = 1 a normal that leans on directions the
# generator barely renders: +-2 distance std moved the teacher by 0.08 / 0.14 / 0.15 std (age / male
# / smile), at C = 0.001 by 0.63 / 0.80 / 1.07, with identity kept above different people's; below
# it the change is flat (``scripts/edit_bottleneck.py sweep-c``, a selection seed; the targets judge
# on another).
BOUNDARY_C = 1e-3


@dataclass(frozen=True)
class Target:
    """Where a build reads its world and writes its artifacts (see the module docstring)."""

    name: str
    work: Path  # stamps, build.json and work files; a world folder's artifacts too
    ship: bool  # into facelab/weights/, through each trainer's --ship
    crop: str = "world"  # how photos are aligned for its faces (facelab.worlds.CROPS)
    budgets: dict | None = None  # {preset: {field: steps}}: world.json's overrides of facelab.worlds.PRESETS

    @property
    def generator(self) -> str:
        return self.name if self.ship else str(self.work / "generator.pt")

    @property
    def regressor(self) -> str:
        return "H" if self.ship else str(self.work / "regressor.pt")


def stages_to_run(only: str | None, start: str | None) -> tuple[list[str], bool]:
    """The stages to consider and whether stamps are ignored (``--only``/``--from`` force a rerun)."""
    for name, flag in ((only, "--only"), (start, "--from")):
        if name is not None and name not in STAGES:
            raise ValueError(f"unknown stage {name!r} for {flag}; choose one of {', '.join(STAGES)}")
    if only and start:
        raise ValueError(f"--only {only} and --from {start} do not go together; pass one of them")
    if only:
        return [only], True
    if start:
        return list(STAGES[STAGES.index(start):]), True
    return list(STAGES), False


def held_out(n: int) -> int:
    """Faces H never trains on: a tenth, at most 2000 (enough for r to about +-0.02)."""
    return min(2000, max(1, n // 10))


def device_flag(args) -> list[str]:
    return ["--device", args.device] if args.device else []


# Below this share of faces found by MTCNN, the teacher labels too few faces for H to learn from.
MIN_DETECTION = 0.5


def detection_rate(labels: Path) -> float:
    """The share of labelled faces in which the teacher's detector (MTCNN) found a face."""
    import numpy as np

    conf = np.concatenate([np.load(f)["face_conf"] for f in sorted(labels.glob("chunk*[0-9].npz"))])
    return float((conf >= 0.5).mean())


def stage_label(t: Target, args) -> None:
    from .regressor import label

    label(t.work / "labels", args.n_samples, generator=t.generator, seed=args.seed, device=args.device)
    rate = detection_rate(t.work / "labels")
    print(f"label: MTCNN found a face in {rate:.1%} of the faces", flush=True)
    if rate < MIN_DETECTION:
        print(f"warning: the teacher's detector found a face in only {rate:.1%} of this world's faces; H and "
              "everything after it learn from those alone. Is the generator trained long enough?", flush=True)


H_FIT_STAMP = ".done-h-fit"  # within the h stage: H is fitted (the test set may still be unlabelled)


def stage_h(t: Target, args) -> None:
    from .regressor import fit, label, test

    fitted = t.work / H_FIT_STAMP  # the fit is done: a run stopped in the test set's labelling resumes there
    if not fitted.exists():
        fit(t.work / "labels", val=held_out(args.n_samples), epochs=args.h_epochs, lr=args.h_lr, init=args.h_init,
            width=args.h_width, weights=args.h_weight, ship=t.ship, device=args.device)
        if not t.ship:
            atomic_copy(t.work / "labels" / "attribute_regressor.pt", t.work / "regressor.pt")
        fitted.touch()
    if args.h_test:  # a fresh test set from the next seed, which no H trains on; kept for later rebuilds
        label(t.work / "h-test", args.h_test, generator=t.generator, seed=args.seed + 1, device=args.device)
        test(t.work / "h-test", regressor=None if t.ship else t.work / "regressor.pt", ship=t.ship, device=args.device)


def stage_boundaries(t: Target, args) -> None:
    from ..hub import PACKAGE_WEIGHTS
    from .boundaries import main as boundaries_main

    out = PACKAGE_WEIGHTS / f"boundaries_{t.name}.pt" if t.ship else t.work / "boundaries.pt"
    argv = ["--generator", t.generator, "--labeler", t.regressor, "--n", str(args.boundary_samples or args.n_samples),
            "--spaces", "w,z", "--rescore-n", "64", "--C", str(args.boundary_c), "--out", str(out),
            "--work", str(t.work / "boundary-labels"), "--seed", str(args.seed)]
    boundaries_main(argv + (["--ship"] if t.ship else []) + device_flag(args))


def annealed_tail(steps: int, asked: int | None, share: Fraction) -> int:
    """How many of a run's ``steps`` anneal its lr at the end: ``asked`` (a flag), else the same
    ``share`` of them as the shipped run's (a small test build's few steps anneal the same share)."""
    return int(steps * share) if asked is None else asked


def mapper_anneal(args) -> int:
    """The mapper run's annealed tail: --mapper-anneal-steps, by default MAPPER's share (4000 of 10 000)."""
    return annealed_tail(args.mapper_steps, args.mapper_anneal_steps, Fraction(MAPPER["lr_anneal_steps"], MAPPER_STEPS))


def stage_mapper(t: Target, args) -> None:
    if t.ship:  # trains through the shipped G and H, evaluates, ships with its card
        from .mapper import main as mapper_main

        mapper_main(["--out", str(t.work / "mapper"), "--steps", str(args.mapper_steps), "--batch-size",
                     str(MAPPER["batch_size"]), "--lr", str(MAPPER["lr"]), "--lr-anneal-steps",
                     str(mapper_anneal(args)), "--ship"] + device_flag(args))
        return
    import torch

    from ..hub import load_generator, load_regressor
    from ..mapper import MapperConfig, save_mapper
    from .mapper import TrainedThroughOther, train

    G = load_generator(t.generator, device=args.device)
    H = load_regressor(t.regressor, device=args.device)
    cfg = MapperConfig(**{**MAPPER, "steps": args.mapper_steps, "lr_anneal_steps": mapper_anneal(args),
                          "seed": args.seed})
    run = t.work / "mapper-run"

    def trained():
        return train(run, cfg, G=G, H=H, device=args.device, progress=False, stats_n=min(4000, args.n_samples))

    try:
        m = trained()
    except TrainedThroughOther as e:  # H (or G) was rebuilt since: the old run is stale, not a run to resume
        print(f"mapper: {e.args[0].split(';')[0]}: training afresh", flush=True)
        shutil.rmtree(run)
        m = trained()
    save_mapper(m, t.work / "mapper.pt", weight_dtype=torch.float16)


def encoder_anneal(args) -> int:
    """The encoder run's annealed tail: --encoder-anneal-steps, by default a fifth of --encoder-steps."""
    return annealed_tail(args.encoder_steps, args.encoder_anneal_steps, ENCODER_ANNEAL_SHARE)


def stage_encoder(t: Target, args) -> None:
    if t.ship:  # trains (or resumes) to --encoder-steps, evaluates, ships with its card
        from .encoder import main as encoder_main

        init = ["--init", str(args.encoder_init)] if args.encoder_init else []
        run = (["--recard"] if args.keep_encoder else
               ["--out", str(t.work / "encoder"), "--steps", str(args.encoder_steps),
                "--anneal-steps", str(encoder_anneal(args)), "--ship", *init])
        encoder_main(["--world", t.name, *run] + device_flag(args))
        return
    from ..encoder import PRESETS
    from ..hub import save_encoder
    from ..worlds import World
    from .encoder import load_start, train

    world = World(t.name, generator=t.work / "generator.pt", crop=t.crop, folder=t.work, device=args.device)
    init = load_start(args.encoder_init, world.device) if args.encoder_init else None
    E = train(t.work / "encoder-run", world, PRESETS["cpu"], steps=args.encoder_steps, progress=False, init=init,
              anneal_steps=encoder_anneal(args), seed=args.seed)
    save_encoder(E, t.work / "encoder.pt", meta=E.meta)


def stage_cards(t: Target, args) -> None:
    if t.ship:  # the world's own card, figures and targets; every other card was rewritten by its stage
        from .evaluate import main as evaluate_main
        from .targets import main as targets_main

        metrics = f"docs/{t.name}/metrics.json"
        evaluate_main([t.name, "--n", str(args.eval_n), "--figures", f"docs/{t.name}", "--json", metrics]
                      + device_flag(args))
        targets_main([t.name, "--metrics", metrics] + device_flag(args))
        return
    folder = t.work
    build = json.loads((folder / "build.json").read_text()) if (folder / "build.json").exists() else {}
    lines = [f"# World {args.name}", "", f"Samples: {args.n_samples}", "", "| stage | wall s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in build.get("seconds", {}).items()]
    report = folder / "labels" / "report.json"
    if report.exists():
        lines += ["", "H held out (Pearson r with the teacher, faces with a label):", ""]
        lines += [f"- {a}: r {r['r']} on {r['n']} faces" for a, r in json.loads(report.read_text())["val"].items()]
    (folder / "world.md").write_text("\n".join(lines) + "\n")
    fields = {k: f"{k}.pt" for k in ARTIFACTS if (folder / f"{k}.pt").exists()}
    if t.budgets:
        fields["budgets"] = t.budgets
    write_world_json(folder, name=args.name, generator="generator.pt", crop=t.crop, **fields)


RUNNERS = {"label": stage_label, "h": stage_h, "boundaries": stage_boundaries, "mapper": stage_mapper,
           "encoder": stage_encoder, "cards": stage_cards}


def copy_generator(src: str, dest: Path, *, resolution: int | None = None) -> None:
    """The world's ``generator.pt``: ``src`` (a facelab generator file, an NVIDIA StyleGAN2-ADA network
    pickle, read as data by :mod:`facelab.nvidia`, or a registry name such as ``world64`` or ``ffhq``),
    cut to ``resolution`` if given. A facelab file is copied as is; anything else is exported."""
    from ..hub import export_generator, load_generator
    from ..nets.stylegan2 import lower_resolution

    check_generator_source(src)
    if resolution is None and Path(src).exists() and Path(src).suffix != ".pkl":
        atomic_copy(src, dest)  # a kill mid-copy must not leave a half file that a rerun keeps
        return
    G = load_generator(src, device="cpu")
    meta = dict(G.meta)
    if resolution is not None:
        G = lower_resolution(G, resolution)
        meta.update(cut_from=str(src), resolution=resolution)
        meta.pop("name", None)  # another generator now: the source's encoder does not fit it
    export_generator(G, dest, meta=meta)


def check_generator_source(src: str) -> None:
    from ..hub import REGISTRY

    if not Path(src).exists() and src not in REGISTRY:
        raise FileNotFoundError(f"generator {src} not found; pass an exported facelab generator (.pt) "
                                "or a registry name such as world64")


def is_registered_generator(name: str) -> bool:
    """A generator facelab knows by name (shipped, or downloaded on first use like ``ffhq``)."""
    from ..hub import REGISTRY

    return name in REGISTRY and REGISTRY[name].kind == "generator"


def check_ship_source(src: str) -> None:
    if not Path(src).is_file():
        raise FileNotFoundError(f"generator {src} not found; --ship takes an exported facelab generator (.pt), "
                                "e.g. a training run's generator.pt")


def ship_generator_if_new(src: str, name: str) -> bool:
    """Replace the package's generator ``name`` by the exported generator ``src`` unless it is that file."""
    from ..hub import load_generator, sha256_file, ship_file, weights_path

    check_ship_source(src)
    if sha256_file(src) == sha256_file(weights_path(name)):
        return False
    kimg = load_generator(src).meta.get("kimg")  # (what does not load is refused here, as ship_generator would)
    trained = f" at {kimg:.1f} kimg" if isinstance(kimg, (int, float)) else ""
    ship_file(src, name, kind="generator", card=f"{name}.md",
              description=f"{name}{trained}, every artifact rebuilt on it (python -m facelab.train.build --ship)")
    return True


def same_generator(t: Target, record: dict, generator: str, *, key: str = "generator_weights_sha256") -> None:
    """Record in ``record`` (build.json) the weights digest of ``generator`` under ``key``, or refuse in one
    line when the work folder was built on another generator: its stamps and artifacts hold for that one
    only (:func:`facelab.hub.weights_sha256`, so a re-export with new meta is the same generator)."""
    from ..hub import load_generator, weights_sha256

    digest = weights_sha256(load_generator(generator, device="cpu"))
    old = record.get(key)
    if old and old != digest:
        where = "a new --work" if t.ship else "a new world (another NAME, or --home)"
        raise ValueError(f"{t.work} was built on another generator (weights {old[:12]}, {generator}: {digest[:12]}); "
                         f"build {generator} into {where}, or delete {t.work} first")
    record[key] = digest


def parse_budgets(items: list[str] | None) -> dict[str, dict[str, int]]:
    """``["cpu.project_steps=20", ...]`` -> ``{"cpu": {"project_steps": 20}}``, checked against
    :data:`facelab.worlds.PRESETS` now, so a misspelt budget fails before the first stage."""
    out: dict[str, dict[str, int]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        preset, dot, field = key.partition(".")
        if not (eq and dot and value.strip().isdigit()):
            raise ValueError(f"--budget {item!r}: write PRESET.FIELD=N, e.g. cpu.project_steps=20")
        out.setdefault(preset.strip(), {})[field.strip()] = int(value)
    for preset, over in out.items():
        budget_of(preset, over, "--budget")
    return out


def target_of(args) -> Target:
    """Check the flags and say where this build goes (see :class:`Target`)."""
    if args.ship:
        if args.name != SHIPPED_WORLD:
            raise ValueError(f"--ship rebuilds the package's own world, {SHIPPED_WORLD}, not {args.name!r}; "
                             "build other worlds without --ship (into FACELAB_HOME)")
        if args.resolution is not None or args.home is not None or args.crop is not None or args.budget:
            raise ValueError("--resolution, --home, --crop and --budget build a world folder; they do not go with "
                             "--ship (world64's budgets are facelab.worlds.PRESETS)")
        return Target(args.name, Path(args.work or f"runs/build/{args.name}"), ship=True)
    if args.work is not None:
        raise ValueError("--work is for --ship; a world folder is its own work folder (set it with --home)")
    root = Path(args.home).expanduser() / "worlds" if args.home else worlds_dir()
    return Target(args.name, root / args.name, ship=False)


def build(args) -> Path:
    """Run the stages of ``args`` (see :func:`main`) and return the work folder."""
    todo, force = stages_to_run(args.only, args.from_)
    t = target_of(args)
    t.work.mkdir(parents=True, exist_ok=True)
    record_path = t.work / "build.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"seconds": {}}
    if t.ship:
        if args.generator:
            check_ship_source(args.generator)
        same_generator(t, record, args.generator or t.name)  # before shipping: refused, nothing changes
        if args.generator and ship_generator_if_new(args.generator, t.name):
            print(f"shipped {args.generator} as facelab/weights/{t.name}.pt", flush=True)
    else:
        gen = t.work / "generator.pt"
        src = args.generator or (args.name if is_registered_generator(args.name) else None)  # e.g. ffhq
        if src:
            if args.generator:  # loaded before anything is copied: a damaged file or another generator is
                check_generator_source(args.generator)  # refused, and nothing changes
                same_generator(t, record, args.generator, key="source_weights_sha256")
            if not gen.exists() or force:
                copy_generator(src, gen, resolution=args.resolution)
                record["crop"] = crop_of(src)  # the copy no longer says where it came from: the record does
            else:  # a first run stopped before its first stage wrote the record: the copy is there, its crop not
                record.setdefault("crop", crop_of(src))
        elif not gen.exists():
            raise FileNotFoundError(f"{gen} not found; pass --generator PATH for a new world")
        record["crop"] = args.crop or record.get("crop", "world")
        if args.budget:  # merged into the budgets of earlier runs, so a rerun of one stage keeps them
            for preset, over in args.budget.items():
                record.setdefault("budgets", {}).setdefault(preset, {}).update(over)
        t = replace(t, crop=record["crop"], budgets=record.get("budgets"))
    if force:  # the stages named are stale from here on: an interrupted rerun must not skip the later ones
        for stage in todo:
            (t.work / f".done-{stage}").unlink(missing_ok=True)
            if stage == "h":
                (t.work / H_FIT_STAMP).unlink(missing_ok=True)
    for stage in todo:
        stamp = t.work / f".done-{stage}"
        if stamp.exists() and not force and not (stage == "cards" and args.budget):  # new budgets: world.json
            print(f"{stage}: done (stamp {stamp.name}), skipped", flush=True)
            continue
        print(f"== {stage}", flush=True)
        t0 = time.perf_counter()
        RUNNERS[stage](t, args)
        record["seconds"][stage] = time.perf_counter() - t0
        atomic_write(record_path, json.dumps(record, indent=1) + "\n")
        stamp.touch()
        print(f"{stage}: {record['seconds'][stage]:.1f} s", flush=True)
    if t.ship:
        print("rebuilt; now re-execute the notebooks (make notebooks), reread their verdict prose, and commit",
              flush=True)
    return t.work


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--generator", default=None,
                   help="for a new world: a facelab generator file (.pt), an NVIDIA network pickle (.pkl, read as "
                        "data) or a registry name (world64, ffhq); with --ship: the new world64 generator (.pt)")
    p.add_argument("--resolution", type=int, default=None,
                   help="cut --generator to this resolution (facelab.nets.stylegan2.lower_resolution), "
                        "e.g. 32 for mini32, the test world of `make test-worlds`")
    p.add_argument("--home", default=None,
                   help="build into DIR/worlds/NAME (default $FACELAB_HOME/worlds/NAME, ~/.cache/facelab/worlds/NAME)")
    p.add_argument("--crop", choices=CROPS, default=None,
                   help="how photos are aligned for the world's faces (default: ffhq for NVIDIA's networks, "
                        "world for facelab's; kept in build.json)")
    p.add_argument("--budget", action="append", metavar="PRESET.FIELD=N",
                   help="override one step budget of the world in world.json (repeatable; kept in build.json), "
                        "e.g. cpu.project_steps=20; fields: facelab.worlds.Budget")
    p.add_argument("--ship", action="store_true",
                   help=f"rebuild the package's own {SHIPPED_WORLD}: ship each artifact into facelab/weights/")
    p.add_argument("--work", default=None, help="with --ship: work files and stamps (default runs/build/NAME)")
    p.add_argument("--n-samples", type=int, default=2000, help="faces labelled by the teacher for H")
    p.add_argument("--boundary-samples", type=int, default=None,
                   help="latents labelled by H for the boundaries (default --n-samples)")
    p.add_argument("--boundary-c", type=float, default=BOUNDARY_C,
                   help=f"the boundaries' SVM regularisation (default {BOUNDARY_C:g}; the reference's is 1: see "
                        "BOUNDARY_C)")
    p.add_argument("--h-epochs", type=int, default=15, help="epochs of H's training")
    p.add_argument("--h-lr", type=float, default=2e-3, help="peak learning rate of H's one-cycle schedule")
    p.add_argument("--h-width", type=int, default=16, help="base width of a fresh H (16: 0.56 M parameters)")
    p.add_argument("--h-weight", action="append", metavar="ATTRIBUTE=W",
                   help="weight one attribute in H's loss (repeatable; the rest 1), e.g. --h-weight age=3")
    p.add_argument("--h-test", type=int, default=0, metavar="N",
                   help="also judge H on N fresh faces of the next seed (regressor test; world64's card used 10000)")
    p.add_argument("--h-init", default=None, metavar="H.pt",
                   help="warm-start H from this one and train --h-epochs more (an H of the same --n-samples "
                        "and --seed: this build's, or one built on an earlier generator of this world)")
    p.add_argument("--mapper-steps", type=int, default=MAPPER_STEPS,
                   help=f"mapper training steps (default {MAPPER_STEPS}, five times the paper's 2000, the last "
                        f"{MAPPER['lr_anneal_steps']} with the lr annealed: see MAPPER_STEPS)")
    p.add_argument("--mapper-anneal-steps", type=int, default=None, metavar="N",
                   help="the last N mapper steps lower its lr by a half cosine to 0 (default: MAPPER's share)")
    p.add_argument("--encoder-steps", type=int, default=3000, help="encoder training steps (CPU preset)")
    p.add_argument("--encoder-anneal-steps", type=int, default=None, metavar="N",
                   help="the last N encoder steps lower its lr by a half cosine to 0 (default: a fifth of them)")
    p.add_argument("--encoder-init", default=None, metavar="E.pt",
                   help="start the encoder from this one (trained for an earlier generator of this world) instead "
                        "of from scratch; its layers stay open, its discriminator and optimisers start afresh")
    p.add_argument("--keep-encoder", action="store_true",
                   help="with --ship: re-evaluate the shipped encoder instead of training one (the generator did not "
                        "change; the encoder is not trained through H or the boundaries)")
    p.add_argument("--eval-n", type=int, default=1000, help="with --ship: faces for the world's own evaluation")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0,
                   help="the faces, latents and initial weights of every stage (--h-test takes the next seed; with "
                        "--ship the mapper and encoder trainers keep their own seed, 0)")
    p.add_argument("--only", default=None, metavar="STAGE", help=f"run only this stage ({', '.join(STAGES)})")
    p.add_argument("--from", dest="from_", default=None, metavar="STAGE", help="rerun from this stage on")
    args = p.parse_args(argv)
    try:
        from .regressor import parse_weights

        args.h_weight = parse_weights(args.h_weight)  # a misspelt weight fails now, not after the label stage
        args.budget = parse_budgets(args.budget)
        build(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    run_main(main)
