"""``facelab``: edit faces in photos from the command line (and notebook 05's pipeline).

    facelab edit photo.jpg --age +10 --smile +0.3 -o out.png          # one photo
    facelab edit photos/ -o edited/ --method pti --by mapper --age +5   # a folder, one failure does not stop it
    facelab invert photo.jpg -o photo.pt --method w+                    # the latent (and --image recon.png)
    facelab invert photo.jpg -o photo.pt                                # pti: the pivots and the tuned weights
    facelab worlds                                                      # what is installed or built

The walk is the course's: the face is found and aligned into the world's crop
(:meth:`facelab.World.align`), inverted (``--method``: ``encoder`` one pass of the world's e4e-style
encoder; ``w`` / ``w+`` the StyleGAN2 projector; ``pti`` encoder pivots + pivotal tuning), edited
(``--by``: ``interfacegan`` moves along the world's W boundaries, ``pattern`` along their activation
patterns, the directions the world's faces vary along, which in world64 move each attribute a
little less per std than the normal and drag correlated ones along
(:func:`facelab.interpret.activation_pattern`, notebooks 01 and 04),
``mapper`` asks the Latent-to-Latent mapper) and rendered. Edits are in the attribute's own units
(``--age +10`` years, ``--smile +0.3`` probability); for InterFaceGAN they become a step along the
normal (or pattern) through the world's average slope (:func:`facelab.interpret.attribute_slope`),
so a single face may move more or less.
Step budgets are the papers' (``--budget paper``, the default: PTI tunes up to 350 steps with early
stop, the projector runs 1000 steps) or the notebooks' (``--budget cpu``, a quick look).

In Python (notebook 05): ``cli.invert(world, face, method=...)`` -> :class:`Inversion`;
``cli.editor(world, {"age": 10}, by=...)`` -> a function ``ws -> edited ws`` (``cli.apply_edits`` applies one).

Exit codes: 0 all done; 1 a photo or more failed (each reported in one line, the rest still done);
2 a usage error. Errors name their cause and fix; no traceback unless ``FACELAB_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import interpret, pti
from .encoder import encode
from .faces import FaceAlignmentError
from .hub import atomic_torch_save
from .imaging import PhotoError, no_photo, save_image
from .nets.regressor import OUTPUTS
from .projector import ProjectConfig, project
from .utils import DeviceUnavailable
from .worlds import ARTIFACTS, PRESETS, load_world, worlds_dir

METHODS = ("encoder", "w", "w+", "pti")
EDITORS = ("interfacegan", "pattern", "mapper")
PATTERN_CODES = 10_000  # latents each boundary's activation pattern is measured over (--by pattern)
ATTRIBUTES = tuple(a for a in OUTPUTS if a != "face_conf")  # what can be asked for: H's attributes
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_STDS = 3  # InterFaceGAN edits beyond this many std of the signed distance leave the data the boundary saw
# What one photo can fail with, reported in a line while the others go on: bad input, a diverging
# optimisation (FloatingPointError, naming the step and the loss), a GPU out of memory.
EXPECTED = (PhotoError, FaceAlignmentError, FileNotFoundError, ValueError, KeyError, OSError, ArithmeticError,
            DeviceUnavailable, torch.cuda.OutOfMemoryError)


@dataclass
class Inversion:
    """A face's latent and the generator that renders it: ``ws`` [1, num_ws, w_dim]; ``G`` the
    world's generator, or PTI's tuned copy; ``seconds`` the inversion's time; ``tuned`` PTI's whole
    result (:class:`facelab.pti.PTIResult`, which saves the tuned weights), None for the others."""

    ws: torch.Tensor
    G: torch.nn.Module
    method: str
    seconds: float
    tuned: pti.PTIResult | None = None

    def render(self, ws: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.G.synthesis(self.ws if ws is None else ws, noise_mode="const").clamp(-1, 1)


def invert(world, face: torch.Tensor, *, method: str = "pti", budget=None, progress: bool = False) -> Inversion:
    """Invert aligned faces ``face`` [N, 3, R, R] in [-1, 1] into ``world`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    budget = budget or world.budget()
    G, t0 = world.G, time.perf_counter()
    face = face.to(world.device)
    if method == "encoder":
        ws = encode(world.encoder, face, G=G)
    elif method == "pti":
        res = pti.tune(G, face, pivots="encoder", encoder=world.encoder,
                       config=pti.PTIConfig(tune_steps=budget.upload_tune_steps), progress=progress)
        return Inversion(res.pivots, res.G, method, time.perf_counter() - t0, tuned=res)
    else:
        proj = project(G, face, space="w", config=ProjectConfig(steps=budget.project_steps), progress=progress)
        if method == "w+":
            proj = project(G, face, space="w+", init=proj, config=ProjectConfig(steps=budget.wplus_steps),
                           progress=progress)
        ws = proj.ws
    return Inversion(ws.detach(), G, method, time.perf_counter() - t0)


def editor(world, changes: dict[str, float], *, by: str = "interfacegan", stacklevel: int = 2):
    """A function ``ws -> edited ws`` for ``changes`` ``{attribute: change in its units}`` (see the module
    docstring); the InterFaceGAN steps are measured once here, so a folder of photos shares them.
    ``stacklevel`` is the warnings module's: a too-large change is reported at the caller's line."""
    if by not in EDITORS:
        raise ValueError(f"unknown editor {by!r}; use one of {', '.join(EDITORS)}")
    changes = {k: float(v) for k, v in changes.items() if v}
    if not changes:
        return lambda ws: ws
    if by == "mapper":
        return lambda ws: world.mapper.edit(ws, stacklevel=stacklevel + 1, **changes)  # + this lambda's frame
    # "pattern": each normal's activation pattern, the direction the world's faces vary along
    boundaries = (world.boundaries("w") if by == "interfacegan" else
                  interpret.world_patterns(world, "w", n=PATTERN_CODES))
    steps = {}
    for name in changes:
        if name in boundaries:
            continue
        normal = world.boundaries("w").get(name)
        if normal is not None and normal.conditions:  # world_patterns leaves projected boundaries out
            raise KeyError(f"world {world.name!r}'s {name} boundary is projected off {', '.join(normal.conditions)}, "
                           "and an activation pattern is taken of plain normals only; use --by interfacegan")
        raise KeyError(f"world {world.name!r} has no boundary for {name!r}; it has {', '.join(boundaries)}")
    for name, change in changes.items():
        b = boundaries[name]
        slope = interpret.attribute_slope(world.G, b, world.H)
        if abs(slope) < 1e-6:
            raise ValueError(f"the {name} boundary barely moves {name} in world {world.name!r}; use --by mapper")
        steps[name] = change / slope
        std = b.report.distance_std if b.report else None
        if std and abs(steps[name]) > MAX_STDS * std:
            warnings.warn(f"{name} {change:+g} asks for {steps[name] / std:+.1f} std along its boundary (the world "
                          f"moves {name} by {slope * std:.3g} per std); beyond +-{MAX_STDS} std faces may break",
                          stacklevel=stacklevel)

    def edit(ws: torch.Tensor) -> torch.Tensor:
        for name, step in steps.items():
            ws = interpret.edit(ws, boundaries[name], step)
        return ws

    return edit


def apply_edits(world, ws: torch.Tensor, changes: dict[str, float], *, by: str = "interfacegan") -> torch.Tensor:
    """Edit W+ latents ``ws`` by ``changes`` ``{attribute: change in its units}``: :func:`editor` applied once."""
    return editor(world, changes, by=by, stacklevel=3)(ws)  # warnings point at the caller, not here


# --- the commands ---------------------------------------------------------------------------


def _photos(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in PHOTO_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p} holds no photos ({', '.join(PHOTO_SUFFIXES)})")
            out += found
        elif not p.exists():  # before the world loads and the edits are calibrated: bad input fails first
            raise no_photo(p)
        else:
            out.append(p)
    return out


def _check_output(out: Path | None, photos: list[Path]) -> bool:
    """Whether there are several photos; then ``-o`` must name a folder, not a file."""
    many = len(photos) > 1
    if many and out is not None and out.suffix.lower() in (*PHOTO_SUFFIXES, ".pt"):
        raise UsageError(f"{len(photos)} photos but -o {out} names a file; give a folder (e.g. -o edited/)")
    return many


def _destination(photo: Path, out: Path | None, many: bool, suffix: str) -> Path:
    if out is None:
        return photo.with_name(f"{photo.stem}_facelab{suffix}")
    if many or out.is_dir() or not out.suffix:
        return out / f"{photo.stem}{suffix}"
    return out


def _plan(photos: list[Path], out: Path | None, many: bool, suffix: str, *, image: Path | None = None) -> dict:
    """``{photo: destination}``, checked before the world loads: no result may overwrite a photo (a folder
    edited into itself) or another result (``p.jpg`` and ``p.png``), every file must end in what it holds
    (an image: one of PHOTO_SUFFIXES; a latent: ``.pt``) and no folder on its way may be a file. ``image``:
    ``invert --image``, one reconstruction beside each latent (several photos) or this file (one)."""
    dests = {p: _destination(p, out, many, suffix) for p in photos}
    files = [(p, d, suffix) for p, d in dests.items()]
    if image is not None:
        files += [(p, d.with_suffix(".png") if many else image, ".png") for p, d in dests.items()]
    inputs, taken = {p.resolve(): p for p in photos}, {}
    for photo, dest, kind in files:
        holds, allowed, name = (("a latent", (".pt",), ".pt") if kind == ".pt" else
                                ("an image", PHOTO_SUFFIXES, ".png (or .jpg, .webp, ...)"))
        if dest.suffix.lower() not in allowed:
            raise UsageError(f"{'-o' if kind == suffix else '--image'} {dest}: the file holds {holds}; name it {name}")
        at = dest.resolve()
        if at in inputs:
            raise UsageError(f"{dest} would overwrite the photo {inputs[at]}; write the results elsewhere "
                             "(e.g. -o edited/)")
        if at in taken:
            raise UsageError(f"{taken[at]} and {photo} would both be saved as {dest}; rename one of them, "
                             "or run them separately")
        taken[at] = photo
        above = next((q for q in dest.parents if q.exists()), None)
        if above is not None and not above.is_dir():
            raise UsageError(f"cannot save {dest}: {above} is a file, not a folder; pick another -o")
    return dests


def _one_edit(world, photo: Path, dest: Path, args, edit) -> None:
    face = world.align(photo)[None]  # [1, 3, R, R]
    inv = invert(world, face, method=args.method, budget=world.budgets[args.budget])
    edited = inv.render(edit(inv.ws))
    images = torch.cat([face.to(edited.device), inv.render(), edited]) if args.compare else edited
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, dest, nrow=len(images), scale=args.scale)
    print(f"{photo}: saved {dest}", flush=True)


def _one_invert(world, photo: Path, dest: Path, args, many: bool) -> None:
    face = world.align(photo)[None]
    inv = invert(world, face, method=args.method, budget=world.budgets[args.budget])
    dest.parent.mkdir(parents=True, exist_ok=True)
    if inv.tuned is not None:  # the pivots alone would render the untuned world's face: keep the weights too
        inv.tuned.save(dest)
    else:
        atomic_torch_save({"format": "facelab.latent/1", "world": world.name, "method": inv.method,
                           "photo": str(photo), "ws": inv.ws.detach().cpu()}, dest)
    saved = [dest]
    if args.image:  # several photos: each reconstruction beside its latent
        saved.append(save_image(inv.render(), dest.with_suffix(".png") if many else args.image, scale=args.scale))
    print(f"{photo}: saved {' and '.join(map(str, saved))}", flush=True)


def _run_batch(photos: list[Path], work, what: str) -> int:
    """Run ``work(photo)`` on each photo with a progress bar; report failures at the end."""
    from tqdm.auto import tqdm

    failed = []
    for photo in tqdm(photos, desc=what, unit="photo", disable=len(photos) < 2):
        try:
            work(photo)
        except EXPECTED as e:
            if os.environ.get("FACELAB_DEBUG"):  # the traceback of the first failure, as main's errors
                raise
            failed.append((photo, e))
            if len(photos) == 1:
                break
    for photo, e in failed:
        print(f"facelab: {photo}: {_message(e)}", file=sys.stderr)
    if len(photos) > 1:
        print(f"{what}: {len(photos) - len(failed)} of {len(photos)} photos done"
              + (f", {len(failed)} failed (listed above)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _message(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return text.splitlines()[0] if text else type(e).__name__


def cmd_edit(args) -> int:
    changes = {a: getattr(args, a) for a in ATTRIBUTES if getattr(args, a) is not None}
    if not changes:
        raise UsageError("no edit asked for; add e.g. --age +5 or --smile 0.3 (see facelab edit --help)")
    photos = _photos(args.photos)
    many = _check_output(args.output, photos)
    dests = _plan(photos, args.output, many, ".png")
    world = load_world(args.world, device=args.device)
    edit = editor(world, changes, by=args.by)
    return _run_batch(photos, lambda p: _one_edit(world, p, dests[p], args, edit), "edit")


def cmd_invert(args) -> int:
    photos = _photos(args.photos)
    many = _check_output(args.output, photos)
    dests = _plan(photos, args.output, many, ".pt", image=args.image)
    world = load_world(args.world, device=args.device)
    return _run_batch(photos, lambda p: _one_invert(world, p, dests[p], args, many), "invert")


def cmd_worlds(args) -> int:
    names = ["world64", "ffhq"]
    if worlds_dir().is_dir():
        names += sorted(p.parent.name for p in worlds_dir().glob("*/world.json") if p.parent.name not in names)
    for name in names:
        try:
            world = load_world(name, device="cpu")
        except (ValueError, OSError) as e:  # one broken world.json must not hide the worlds after it
            print(f"{name:10s} unreadable: {_message(e)}")
            continue
        have = []
        for kind in ARTIFACTS:
            try:
                world.path(kind)
                have.append(kind)
            except FileNotFoundError:
                pass
        missing = [k for k in ARTIFACTS if k not in have]
        status = "complete" if not missing else f"missing {', '.join(missing)} (build: {world.build_command})"
        print(f"{name:10s} generator {str(world.generator):24s} crop {world.crop:5s} {status}")
    print(f"built worlds live in {worlds_dir()}")
    return 0


class UsageError(Exception):
    """A command line that cannot run (exit code 2)."""


def _signed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. +10, -0.3)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite change (e.g. +10, -0.3)")
    return value


MAX_SCALE = 16  # --scale: a 1024 px face at 16x is already a 16384 px image


def _scale(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (e.g. 4)") from None
    if not 1 <= value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"{value} is not in 1..{MAX_SCALE} (1 saves the face at its own size)")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="facelab",
                                  description="Edit faces in photos with StyleGAN (the facelab course).",
                                  epilog="Start with: facelab edit photo.jpg --age +5 -o out.png")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="photo files or folders of photos")
        p.add_argument("-o", "--output", type=Path, help="output file (one photo) or folder")
        p.add_argument("--method", choices=METHODS, default="pti",
                       help="inversion: encoder (one pass), w / w+ (projector), pti (default: encoder pivots + tuning)")
        p.add_argument("--world", default=os.environ.get("FACELAB_WORLD", "world64"),
                       help="world name or path (default: FACELAB_WORLD, else world64)")
        p.add_argument("--device", default=None, help="cpu, cuda, ... (default: FACELAB_DEVICE, else the best)")
        p.add_argument("--budget", choices=sorted(PRESETS), default="paper",
                       help="step budgets: paper (default: the papers' steps, PTI with early stop) or cpu "
                            "(notebook-sized, a quick look)")
        p.add_argument("--scale", type=_scale, default=4,
                       help=f"enlarge the saved image this many times, 1..{MAX_SCALE} (default 4)")

    e = sub.add_parser("edit", help="invert photos, edit attributes, save the edited faces",
                       description="Align the face, invert it, edit it, save the image (-o: .png, .jpg, ...). "
                                   "Changes are in each attribute's units: age in years, male/smile as "
                                   "probabilities, yaw and mouth_width in eye distances, roll in degrees.")
    common(e)
    for a in ATTRIBUTES:
        e.add_argument(f"--{a.replace('_', '-')}", dest=a, type=_signed, metavar="CHANGE",
                       help=f"change of {a} ({OUTPUTS[a]['unit']})")
    e.add_argument("--by", choices=EDITORS, default="interfacegan",
                   help="how to edit: interfacegan (along the boundaries' normals, the default), pattern (along their "
                        "activation patterns) or mapper")
    e.add_argument("--compare", action="store_true", help="save the crop, the inversion and the edit side by side")
    e.set_defaults(run=cmd_edit)

    i = sub.add_parser("invert", help="invert photos into the world's W+ and save the latents (.pt)",
                       description="Align the face, invert it, save its W+ latent (format facelab.latent/1). With "
                                   "--method pti (the default) the file is PTI's: the pivots and the tuned "
                                   "generator's weights, read by facelab.pti.load_pti(path, world.G).")
    common(i)
    i.add_argument("--image", type=Path,
                   help="also save the reconstruction as this PNG (several photos: each beside its latent)")
    i.set_defaults(run=cmd_invert)

    w = sub.add_parser("worlds", help="list the worlds and what each has built")
    w.set_defaults(run=cmd_worlds)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.formatwarning = lambda message, *_, **__: f"facelab: warning: {message}\n"
    try:
        return args.run(args)
    except UsageError as e:
        print(f"facelab: error: {e}", file=sys.stderr)
        return 2
    except EXPECTED as e:
        if os.environ.get("FACELAB_DEBUG"):
            raise
        print(f"facelab: error: {_message(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
