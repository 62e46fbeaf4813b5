"""Worlds: a StyleGAN2 generator with everything the course needs around it, loaded by one name.

A :class:`World` bundles the generator ``G``, its face crop (how a photo is aligned for it), its
attribute regressor ``H``, its InterFaceGAN boundaries (Shen et al., CVPR 2020), its latent-to-latent
mapper (Khodadadeh et al., WACV 2022), its e4e-style encoder (Tov et al., SIGGRAPH 2021) and its
step budgets (:class:`Budget`: a CPU preset and the papers' preset). Each artifact is loaded on first use, so naming a world costs nothing::

    world = fl.load_world("world64")            # or "ffhq", a built world's name, or a path
    G, H = world.G, world.H                      # the generator; H: face -> attributes
    B = world.boundaries("w")                    # {name: Boundary}
    budget = world.budget()                      # paper steps on CUDA, the CPU preset elsewhere

Names: ``"world64"`` (the 64 px world shipped in ``facelab/weights``), ``"ffhq"`` (NVIDIA's
StyleGAN2-ADA FFHQ 1024 pickle, downloaded on first use; its other artifacts are built into
``$FACELAB_HOME/worlds/ffhq/``), the name of a world built into ``$FACELAB_HOME/worlds/NAME/``, or a
path: a world folder (with ``world.json``), an NVIDIA ``.pkl`` or a facelab generator file. What a
world lacks is reported in one line naming ``python -m facelab.train.build NAME``, which builds it.

``world.json`` (format :data:`WORLD_FORMAT`, written by :func:`write_world_json`)::

    {"format": "facelab.world/1", "name": "mini32",
     "generator": "generator.pt",      # relative to the folder: a facelab generator file or an NVIDIA .pkl
     "crop": "world",                  # or "ffhq"
     "regressor": "regressor.pt", "boundaries": "boundaries.pt", "mapper": "mapper.pt",  # each optional
     "encoder": "encoder.pt",
     "budgets": {"cpu": {...}, "paper": {...}}}                                          # optional overrides

Layering: this module sits between the core and the topic modules. Boundaries, mappers and encoders are
read by their topic modules (:func:`facelab.interpret.load_boundaries`, :func:`facelab.mapper.load_mapper`,
:func:`facelab.encoder.load_encoder`),
which register those readers here when they are imported (:func:`register_reader`); a world only
keeps the files' locations.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from .faces import CROPS  # "world": facelab's measured template at the generator's side; "ffhq": FFHQ's quad
from .hub import FILE_SUFFIXES, atomic_write, cache_dir, is_path, load_generator, load_regressor
from .nets.stylegan2 import Generator
from .utils import Config, get_device

__all__ = ["ARTIFACTS", "Budget", "CROPS", "PRESETS", "WORLD_FORMAT", "World", "budget_of", "load_world",
           "register_reader", "worlds_dir", "write_world_json"]

WORLD_FORMAT = "facelab.world/1"
ARTIFACTS = ("regressor", "boundaries", "mapper", "encoder")  # the optional files of a world folder
SHIPPED = "world64"


@dataclass(frozen=True)
class Budget(Config):
    """How many steps and samples the course spends, per algorithm (one preset per device class).

    project_steps / wplus_steps: projector steps into W and W+ (notebook 02; the W+ run starts from W).
    pti_pivot_steps / pti_tune_steps: pivot projection and tuning steps of PTI on world faces (03).
    photo_pivot_steps / photo_tune_steps: the same for a real photo (04).
    upload_tune_steps: PTI tuning steps (with early stop) for the user's own photo, from the encoder's pivot (05).
    mapper_steps: training steps of the mapper trained live (04).
    boundary_samples: latents sampled to fit boundaries live (01).
    eval_faces: random faces an edit is measured on (01, 04).
    locality_faces: random faces PTI's locality is measured on (03).
    The defaults are the papers' values (StyleGAN2 projector 1000 steps; PTI 450 + 350; the mapper
    2000 steps); see :data:`PRESETS`.
    """

    project_steps: int = 1000
    wplus_steps: int = 1000
    pti_pivot_steps: int = 450
    pti_tune_steps: int = 350
    photo_pivot_steps: int = 450
    photo_tune_steps: int = 350
    upload_tune_steps: int = 350
    mapper_steps: int = 2000
    boundary_samples: int = 30_000  # a live fit's (world64's shipped boundaries: 100 000; InterFaceGAN's 500 000)
    eval_faces: int = 1000
    locality_faces: int = 64

    def __post_init__(self):
        bad = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
               if not (isinstance(getattr(self, f.name), int) and getattr(self, f.name) >= 1)]
        if bad:
            raise ValueError(f"Budget values are positive whole numbers, got {', '.join(bad)}")


# "cpu": what notebooks 01-04 spend on two CPU cores with world64; "paper": the papers' budgets, used on CUDA.
PRESETS: dict[str, Budget] = {
    "cpu": Budget(project_steps=100, wplus_steps=40, pti_pivot_steps=80, pti_tune_steps=80, photo_pivot_steps=60,
                  photo_tune_steps=40, upload_tune_steps=150, mapper_steps=20, boundary_samples=2000, eval_faces=64,
                  locality_faces=16),
    "paper": Budget(),
}

# kind ("boundaries", "mapper", "encoder") -> reader(name_or_path, **kw) registered by the topic module that owns the format
_READERS: dict[str, Callable[..., Any]] = {}


def register_reader(kind: str, reader: Callable[..., Any]) -> None:
    """Let a topic module read one kind of world artifact: ``reader(name_or_path, **kw)``.

    :mod:`facelab.interpret` registers ``"boundaries"``, :mod:`facelab.mapper` ``"mapper"`` and
    :mod:`facelab.encoder` ``"encoder"`` when imported (``import facelab`` imports them), so this module
    never imports a topic module.
    """
    if kind not in ARTIFACTS:
        raise ValueError(f"unknown world artifact {kind!r}; one of {ARTIFACTS}")
    _READERS[kind] = reader


def worlds_dir() -> Path:
    """``$FACELAB_HOME/worlds`` (default ``~/.cache/facelab/worlds``): where built worlds live."""
    return cache_dir().parent / "worlds"


def write_world_json(folder: str | Path, **fields) -> Path:
    """Write ``folder/world.json`` (see the module docstring); ``name`` defaults to the folder's name.

    Paths are stored relative to ``folder``; unknown fields are refused, so a typo cannot be lost.
    """
    folder = Path(folder)
    known = {"name", "generator", "crop", "resolution", "budgets", "meta", *ARTIFACTS}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"world.json has no field {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "generator" not in fields:
        raise ValueError("write_world_json needs generator= (a file in the folder, or a weights name such as 'ffhq')")
    data = {"format": WORLD_FORMAT, "name": folder.name, **fields}
    for key in ("generator", *ARTIFACTS):
        if key in data and data[key] is not None:
            p = Path(data[key])
            data[key] = str(p.relative_to(folder) if p.is_absolute() and p.is_relative_to(folder) else p)
    _check_crop(data.get("crop", "world"), folder / "world.json")
    for preset, over in (data.get("budgets") or {}).items():
        budget_of(preset, over, folder / "world.json")  # refuse bad overrides now, not at first use
    return atomic_write(folder / "world.json", json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _check_crop(crop: str, where) -> None:
    if crop not in CROPS:
        raise ValueError(f"{where}: unknown crop {crop!r}; use one of {CROPS}")


def budget_of(preset: str, overrides: dict | None, where) -> Budget:
    """``PRESETS[preset]`` with ``overrides`` ({field: steps}); a bad preset, field or value is a
    ``ValueError`` that starts with ``where`` (the file or flag it came from)."""
    if preset not in PRESETS:
        raise ValueError(f"{where}: unknown budget preset {preset!r}; use one of {sorted(PRESETS)}")
    try:
        return PRESETS[preset].replace(**(overrides or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: budgets[{preset!r}]: {e}") from None


class World:
    """One generator and its artifacts (see the module docstring); build one with :func:`load_world`.

    ``name``: the world's name; ``crop``: ``"world"`` or ``"ffhq"``; ``generator``: a weights name or
    a file; ``files``: ``{"regressor" | "boundaries" | "mapper" | "encoder": weights name or path}``
    (absent: not built yet); ``device``: where the networks go (None: :func:`facelab.get_device`).
    """

    def __init__(self, name: str, *, generator: str | Path, crop: str = "world", files: dict | None = None,
                 budgets: dict | None = None, resolution: int | None = None, folder: Path | None = None,
                 device=None):
        _check_crop(crop, f"world {name!r}")
        self.name, self.generator, self.crop, self.folder = name, generator, crop, folder
        self.files = {k: v for k, v in (files or {}).items() if v is not None}
        self.budgets = {k: budget_of(k, (budgets or {}).get(k), f"world {name!r}") for k in PRESETS}
        self.device = get_device(device)
        self._resolution = resolution
        self._boundaries: dict[str | None, dict] = {}  # space -> {name: Boundary}, read once

    def __repr__(self) -> str:
        return (f"World({self.name!r}, generator={str(self.generator)!r}, crop={self.crop!r}, "
                f"built={sorted(self.files)})")

    @property
    def build_command(self) -> str:
        """The command that builds this world's missing artifacts: a world loaded from a generator file
        names that file, since its name alone finds no generator."""
        from_file = self.folder is None and is_path(self.generator) and self.generator != self.name
        return f"python -m facelab.train.build {self.name}" + (f" --generator {self.generator}" if from_file else "")

    @cached_property
    def G(self) -> Generator:  # noqa: N802 (the papers' name)
        """The generator, loaded (and for ``ffhq`` downloaded) on first use; ``G.meta["crop"]`` is this
        world's crop, which the metrics' chips follow (:func:`facelab.metrics.generator_crop`)."""
        G = load_generator(self.generator, device=self.device)
        G.meta["crop"] = self.crop
        return G

    @property
    def resolution(self) -> int:
        """The generator's output side in pixels (known without loading it for the named worlds)."""
        return self._resolution or self.G.img_resolution

    def path(self, kind: str) -> str | Path:
        """Where artifact ``kind`` lives, or a one-line ``FileNotFoundError`` saying how to build it."""
        if kind not in ARTIFACTS:
            raise ValueError(f"unknown world artifact {kind!r}; one of {ARTIFACTS}")
        where = self.files.get(kind)
        if where is None or (isinstance(where, Path) and not where.is_file()):
            looked = f" (looked for {where})" if where is not None else ""
            raise FileNotFoundError(f"world {self.name!r} has no {kind} yet{looked}; build it with "
                                    f"`{self.build_command}`")
        return where

    def _read(self, kind: str, **kw):
        where = self.path(kind)
        if kind not in _READERS:
            raise RuntimeError(f"no reader for {kind} is registered; `import facelab` (it imports the topic modules)")
        return _READERS[kind](where, **kw)

    @cached_property
    def H(self):  # noqa: N802
        """The attribute regressor for this world's faces (:mod:`facelab.nets.regressor`)."""
        return load_regressor(self.path("regressor"), device=self.device)

    @cached_property
    def mapper(self):
        """The latent-to-latent mapper (:class:`facelab.mapper.LatentMapper`)."""
        return self._read("mapper", device=self.device)

    @cached_property
    def encoder(self):
        """The e4e-style encoder: aligned face -> W+ in one pass (:mod:`facelab.encoder`)."""
        return self._read("encoder", device=self.device)

    def boundaries(self, space: str | None = "w") -> dict:
        """``{name: Boundary}`` in ``space`` (``"z"``, ``"w"``, ``"w+"``; None: all, keyed ``"space/name"``).

        The file is read once per space; each call returns a new dict of the same boundaries."""
        if space not in self._boundaries:
            self._boundaries[space] = self._read("boundaries", space=space)
        return dict(self._boundaries[space])

    def with_files(self, **files: str | Path) -> World:
        """This world with some artifacts swapped (``regressor=``, ``boundaries=``, ``mapper=``,
        ``encoder=``: a weights name or a file), e.g. a candidate H and the boundaries fitted with it,
        judged before they ship. The generator, if already loaded, is shared; nothing else is."""
        unknown = sorted(set(files) - set(ARTIFACTS))
        if unknown:
            raise ValueError(f"unknown world artifact(s) {', '.join(map(repr, unknown))}; one of {ARTIFACTS}")
        world = World(self.name, generator=self.generator, crop=self.crop, files={**self.files, **files},
                      resolution=self._resolution, folder=self.folder, device=self.device)
        world.budgets = dict(self.budgets)
        if "G" in self.__dict__:
            world.G = self.G
        return world

    def align(self, photo, **kw):
        """The face in ``photo`` aligned for this world: ``[3, R, R]`` in [-1, 1], R = :attr:`resolution`.

        :func:`facelab.faces.align_face` with this world's crop and size; ``kw`` go to it."""
        from .faces import align_face

        kw.setdefault("size", self.resolution)
        kw.setdefault("crop", self.crop)
        kw.setdefault("device", self.device)
        return align_face(photo, **kw)

    def budget(self, device=None) -> Budget:
        """The step budgets for ``device`` (None: this world's): the ``paper`` preset on CUDA, ``cpu`` elsewhere.

        ``device`` only names a kind of device here (``"cuda"`` gives the paper preset even on a machine
        without one), so a notebook can show both presets."""
        kind = (self.device if device is None else torch.device(device)).type
        return self.budgets["paper" if kind == "cuda" else "cpu"]


def _shipped(device) -> World:
    """world64: exactly the files the notebooks load (hub's and the topic modules' defaults)."""
    files = {"regressor": "attribute_regressor", "boundaries": "world64", "mapper": "mapper_world64",
             "encoder": "encoder_world64"}
    return World(SHIPPED, generator=SHIPPED, crop="world", files=files, resolution=64, device=device)


def _from_folder(folder: Path, device, *, name: str | None = None, default_generator=None,
                 default_crop: str = "world") -> World:
    path = folder / "world.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} ({e}); rebuild it with `python -m facelab.train.build "
                         f"{name or folder.name}`") from None
    if not isinstance(data, dict) or data.get("format") != WORLD_FORMAT:
        raise ValueError(f"{path} is not a facelab world (expected format {WORLD_FORMAT!r}); write it with "
                         "facelab.worlds.write_world_json")
    name = name or data.get("name") or folder.name
    gen = data.get("generator") or default_generator
    if gen is None:
        raise ValueError(f"{path} names no generator; rebuild it with `python -m facelab.train.build {name}`")
    generator = folder / gen if (folder / gen).exists() or str(gen).endswith(FILE_SUFFIXES) else gen
    files = {k: folder / data[k] for k in ARTIFACTS if data.get(k)}
    return World(name, generator=generator, crop=data.get("crop", default_crop), files=files,
                 budgets=data.get("budgets"), resolution=data.get("resolution"), folder=folder, device=device)


def _ffhq(device) -> World:
    """NVIDIA's FFHQ 1024 generator (downloaded by hub) with the artifacts built beside it."""
    folder = worlds_dir() / "ffhq"
    if (folder / "world.json").is_file():  # written by the build
        return _from_folder(folder, device, name="ffhq", default_generator="ffhq", default_crop="ffhq")
    files = {k: folder / f"{k}.pt" for k in ARTIFACTS}
    return World("ffhq", generator="ffhq", crop="ffhq", files=files, resolution=1024, folder=folder, device=device)


def _from_path(path: Path, device) -> World:
    if path.is_dir():
        if not (path / "world.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without world.json; build a world into it with "
                                    f"`python -m facelab.train.build {path.name}`")
        return _from_folder(path, device)
    if not path.is_file():
        raise FileNotFoundError(f"no world at {path} (neither a world folder nor a generator file)")
    return World(path.stem, generator=path, crop=crop_of(path), device=device)


def crop_of(generator: str | Path) -> str:
    """The face crop of a generator's faces, from where the generator comes: ``"ffhq"`` for NVIDIA's FFHQ
    network (the registry's ``ffhq``) and any NVIDIA network pickle (FFHQ-aligned faces, as NVIDIA's
    face models are), ``"world"`` for facelab's own generators."""
    return "ffhq" if str(generator) == "ffhq" or Path(generator).suffix == ".pkl" else "world"


def load_world(name_or_path: str | Path = SHIPPED, *, device=None) -> World:
    """A :class:`World` by name (``"world64"``, ``"ffhq"``, a world built into ``$FACELAB_HOME/worlds``)
    or path (a world folder, an NVIDIA ``.pkl``, a facelab generator file). Nothing is loaded yet:
    ``world.G``, ``world.H``, ``world.boundaries()`` and ``world.mapper`` load on first use."""
    if isinstance(name_or_path, World):
        return name_or_path
    name = str(name_or_path)
    if not isinstance(name_or_path, Path):  # names first: a folder "ffhq" in the working directory is "./ffhq"
        if name == SHIPPED:
            return _shipped(device)
        if name == "ffhq":
            return _ffhq(device)
        if "/" not in name and (worlds_dir() / name / "world.json").is_file():
            return _from_folder(worlds_dir() / name, device, name=name)
    if isinstance(name_or_path, Path) or "/" in name or name.endswith(FILE_SUFFIXES) or Path(name).exists():
        return _from_path(Path(name).expanduser(), device)
    built = sorted(p.parent.name for p in worlds_dir().glob("*/world.json")) if worlds_dir().is_dir() else []
    raise KeyError(f"unknown world {name!r}; known: {[SHIPPED, 'ffhq', *built]} — build it with "
                   f"`python -m facelab.train.build {name}` or pass a world folder or generator file")
