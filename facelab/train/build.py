"""Build every artifact a world needs with one command (issue #18).

    python -m facelab.train.build NAME [--generator PATH|NAME [--resolution R]] [--home DIR]
                                       [--n-samples N] [--h-epochs N] [--mapper-steps N] [--encoder-steps N]
                                       [--device D] [--only STAGE] [--from STAGE]

Stages, in order: ``label`` (render N faces and label them with the teacher labelers) -> ``h`` (train
the attribute regressor H for this world) -> ``boundaries`` (InterFaceGAN boundaries in W and Z, on
H's scores) -> ``mapper`` (the Latent-to-Latent mapper through H) -> ``encoder`` (the e4e-style
encoder, :mod:`facelab.train.encoder`, CPU preset) -> ``cards``. Each
stage writes into ``$FACELAB_HOME/worlds/NAME/`` and leaves a stamp ``.done-STAGE``; a rerun skips
stamped stages unless ``--from`` or ``--only`` names them. Wall time per stage goes to ``build.json``;
the ``cards`` stage writes ``world.md`` and ``world.json`` (format ``facelab.world/1``).

The stages reuse the code that built world64: :func:`facelab.train.regressor.label` and
:func:`~facelab.train.regressor.fit`, ``facelab.train.boundaries`` and :func:`facelab.train.mapper.train`.
``--generator`` takes a facelab generator file, an NVIDIA network pickle or a registry name;
``--resolution`` cuts it to a coarser block first (:func:`facelab.nets.stylegan2.lower_resolution`).
End to end: ``make test-worlds`` builds ``mini32`` (world64 at 32 px, 2000 faces; the time per stage
goes to ``build.json``, and the README quotes one build) and runs every notebook on it. Not yet
(issue #18): ``--ship`` for world64 (its artifacts are shipped by each trainer's own ``--ship``, in
order by ``scripts/rebuild_world64.sh``), batching/bf16 on CUDA, and a warning when the teacher's
detector finds few faces (a briefly trained world draws blobs that MTCNN does not
detect, and then H and everything after it have nothing to learn from).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from ..worlds import ARTIFACTS, worlds_dir, write_world_json

STAGES = ("label", "h", "boundaries", "mapper", "encoder", "cards")


def stages_to_run(only: str | None, start: str | None) -> tuple[list[str], bool]:
    """The stages to consider and whether stamps are ignored (``--only``/``--from`` force a rerun)."""
    for name, flag in ((only, "--only"), (start, "--from")):
        if name is not None and name not in STAGES:
            raise ValueError(f"unknown stage {name!r} for {flag}; choose one of {', '.join(STAGES)}")
    if only:
        return [only], True
    if start:
        return list(STAGES[STAGES.index(start):]), True
    return list(STAGES), False


def stage_label(folder: Path, args) -> None:
    from .regressor import label

    label(folder / "labels", args.n_samples, generator=str(folder / "generator.pt"), seed=args.seed)


def stage_h(folder: Path, args) -> None:
    from .regressor import fit

    fit(folder / "labels", val=max(1, args.n_samples // 10), epochs=args.h_epochs, ship=False)
    shutil.copyfile(folder / "labels" / "attribute_regressor.pt", folder / "regressor.pt")


def stage_boundaries(folder: Path, args) -> None:
    from .boundaries import main as boundaries_main

    argv = ["--generator", str(folder / "generator.pt"), "--labeler", str(folder / "regressor.pt"),
            "--n", str(args.n_samples), "--spaces", "w,z", "--out", str(folder / "boundaries.pt"),
            "--work", str(folder / "boundary-labels"), "--no-progress"]
    boundaries_main(argv + (["--device", args.device] if args.device else []))


def stage_mapper(folder: Path, args) -> None:
    import torch

    from ..hub import load_generator, load_regressor
    from ..mapper import MapperConfig, save_mapper
    from .mapper import train

    G = load_generator(folder / "generator.pt", device=args.device)
    H = load_regressor(folder / "regressor.pt", device=args.device)
    m = train(folder / "mapper-run", MapperConfig(steps=args.mapper_steps), G=G, H=H, device=args.device,
              progress=False, stats_n=min(4000, args.n_samples))
    save_mapper(m, folder / "mapper.pt", weight_dtype=torch.float16)


def stage_encoder(folder: Path, args) -> None:
    from ..encoder import PRESETS
    from ..hub import save_encoder
    from ..worlds import World
    from .encoder import train

    world = World(args.name, generator=folder / "generator.pt", crop="world", folder=folder, device=args.device)
    E = train(folder / "encoder-run", world, PRESETS["cpu"], steps=args.encoder_steps, progress=False)
    save_encoder(E, folder / "encoder.pt", meta=E.meta)


def stage_cards(folder: Path, args) -> None:
    build = json.loads((folder / "build.json").read_text()) if (folder / "build.json").exists() else {}
    lines = [f"# World {args.name}", "", f"Samples: {args.n_samples}", "", "| stage | wall s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in build.get("seconds", {}).items()]
    report = folder / "labels" / "report.json"
    if report.exists():
        lines += ["", "H held out (Pearson r with the teacher, faces with a label):", ""]
        lines += [f"- {a}: r {r['r']} on {r['n']} faces" for a, r in json.loads(report.read_text())["val"].items()]
    (folder / "world.md").write_text("\n".join(lines) + "\n")
    fields = {k: f"{k}.pt" for k in ARTIFACTS if (folder / f"{k}.pt").exists()}
    write_world_json(folder, name=args.name, generator="generator.pt", crop="world", **fields)


RUNNERS = {"label": stage_label, "h": stage_h, "boundaries": stage_boundaries, "mapper": stage_mapper,
           "encoder": stage_encoder, "cards": stage_cards}


def copy_generator(src: str, dest: Path, *, resolution: int | None = None) -> None:
    """The world's ``generator.pt``: ``src`` (a facelab generator file, an NVIDIA StyleGAN2-ADA network
    pickle, read as data by :mod:`facelab.nvidia`, or a registry name such as ``world64`` or ``ffhq``),
    cut to ``resolution`` if given. A facelab file is copied as is; anything else is exported."""
    from ..hub import REGISTRY, export_generator, load_generator
    from ..nets.stylegan2 import lower_resolution

    if not Path(src).exists() and src not in REGISTRY:
        raise FileNotFoundError(f"generator {src} not found; pass an exported facelab generator (.pt) "
                                "or a registry name such as world64")
    if resolution is None and Path(src).exists() and Path(src).suffix != ".pkl":
        shutil.copyfile(src, dest)
        return
    G = load_generator(src, device="cpu")
    meta = dict(G.meta)
    if resolution is not None:
        G = lower_resolution(G, resolution)
        meta.update(cut_from=str(src), resolution=resolution)
    export_generator(G, dest, meta=meta)


def build(args) -> Path:
    """Run the stages of ``args`` (see :func:`main`) and return the world folder."""
    todo, force = stages_to_run(args.only, args.from_)
    folder = (Path(args.home).expanduser() / "worlds" if args.home else worlds_dir()) / args.name
    folder.mkdir(parents=True, exist_ok=True)
    gen = folder / "generator.pt"
    if args.generator:
        if not gen.exists() or force:
            copy_generator(args.generator, gen, resolution=args.resolution)
    elif not gen.exists():
        raise FileNotFoundError(f"{gen} not found; pass --generator PATH for a new world")
    record_path = folder / "build.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"seconds": {}}
    for stage in todo:
        stamp = folder / f".done-{stage}"
        if stamp.exists() and not force:
            print(f"{stage}: done (stamp {stamp.name}), skipped", flush=True)
            continue
        t0 = time.perf_counter()
        RUNNERS[stage](folder, args)
        record["seconds"][stage] = time.perf_counter() - t0
        record_path.write_text(json.dumps(record, indent=1) + "\n")
        stamp.touch()
        print(f"{stage}: {record['seconds'][stage]:.1f} s", flush=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--generator", default=None,
                   help="for a new world: a facelab generator file (.pt), an NVIDIA network pickle (.pkl, read as "
                        "data) or a registry name (world64, ffhq)")
    p.add_argument("--resolution", type=int, default=None,
                   help="cut --generator to this resolution (facelab.nets.stylegan2.lower_resolution), "
                        "e.g. 32 for mini32, the test world of `make test-worlds`")
    p.add_argument("--home", default=None, help="FACELAB_HOME (default $FACELAB_HOME or ~/.cache/facelab)")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--h-epochs", type=int, default=15, help="epochs of H's training")
    p.add_argument("--mapper-steps", type=int, default=2000, help="mapper training steps (the paper's 2000)")
    p.add_argument("--encoder-steps", type=int, default=3000, help="encoder training steps (CPU preset)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, choices=None)
    p.add_argument("--from", dest="from_", default=None)
    args = p.parse_args(argv)
    try:
        build(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
