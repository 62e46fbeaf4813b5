"""Named weights: a registry, a cache, integrity checks and safe loading.

Every named weight file is either shipped inside the package (``facelab/weights/``) or downloaded
once from a URL into the cache ``$FACELAB_HOME/weights`` (default ``~/.cache/facelab/weights``).
Each entry carries a sha256; a file whose hash does not match is never used. The one exception is a
remote file whose publisher gives no hash (NVIDIA's ``ffhq.pkl``): its sha256 is pinned on first
download, in ``<file>.sha256`` beside it, and every later use is checked against that pin. Downloads are written
to a temporary file and renamed into place, so an interrupted download never leaves a corrupt file.
Everything is loaded with ``torch.load(..., weights_only=True)``: loading never runs code from a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .nets.stylegan2 import Generator, StyleGAN2Config

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
HOME_ENV = "FACELAB_HOME"
GENERATOR_FORMAT = "facelab.generator/1"


@dataclass(frozen=True)
class WeightSpec:
    """One named weight file: shipped in the package (``url=None``) or downloaded from ``url``."""

    name: str
    filename: str
    sha256: str | None  # None: a remote file without a published hash, pinned on first download
    kind: str = "generator"
    url: str | None = None
    description: str = ""
    card: str | None = None  # model card beside the weights, for shipped files


REGISTRY: dict[str, WeightSpec] = {}
MANIFEST = PACKAGE_WEIGHTS / "manifest.json"  # the shipped weights: name -> filename, sha256, ...


def register(spec: WeightSpec, *, overwrite: bool = False) -> WeightSpec:
    """Add a named weight to the registry (e.g. your own trained world)."""
    if spec.name in REGISTRY and not overwrite:
        raise ValueError(f"weights {spec.name!r} are already registered; pass overwrite=True to replace them")
    if spec.sha256 is None and spec.url is None:
        raise ValueError(f"weights {spec.name!r} ship without a sha256; give one (shipped files are always checked)")
    if spec.sha256 is not None and len(spec.sha256) != 64:
        raise ValueError(f"sha256 for {spec.name!r} must be 64 hex digits, got {spec.sha256!r}")
    REGISTRY[spec.name] = spec
    return spec


def cache_dir() -> Path:
    """``$FACELAB_HOME/weights`` (default ``~/.cache/facelab/weights``)."""
    home = os.environ.get(HOME_ENV) or Path.home() / ".cache" / "facelab"
    return Path(home) / "weights"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pin_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _pinned(path: Path) -> str | None:
    """The sha256 pinned for ``path`` (a remote file without a published hash), if any yet."""
    pin = _pin_path(path)
    return pin.read_text().strip() if pin.is_file() else None


def _check_hash(path: Path, spec: WeightSpec) -> Path:
    got = sha256_file(path)
    expected = spec.sha256 or _pinned(path)
    if expected is None:  # no published hash and none pinned yet: the first file seen is pinned
        _pin_path(path).write_text(got + "\n")
        expected = got
    if got != expected:
        fix = (f"delete it (it will be fetched again), and its pin {_pin_path(path).name} too if the publisher "
               "changed the file" if spec.sha256 is None else "delete the file (it will be fetched again) or "
               "reinstall facelab")
        raise ValueError(f"{path} has sha256 {got[:12]}…, expected {expected[:12]}… for {spec.name!r}; {fix}")
    return path


def download(url: str, dest: str | Path, *, sha256: str | None = None, opener=None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` before the file appears.

    ``opener`` is a callable like ``urllib.request.urlopen`` (tests pass a fake one).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or urllib.request.urlopen
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, opener(url) as response:
            while chunk := response.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        if sha256 is not None and h.hexdigest() != sha256:
            raise ValueError(f"download of {url} has sha256 {h.hexdigest()[:12]}…, expected {sha256[:12]}…; "
                             "the file changed upstream or the transfer was corrupted — try again")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def weights_path(name: str, *, opener=None) -> Path:
    """Local path of the named weights, downloading into the cache if needed (sha256 verified)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; known: {sorted(REGISTRY)} (or pass a file path)")
    spec = REGISTRY[name]
    if spec.url is None:
        path = PACKAGE_WEIGHTS / spec.filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installation; reinstall facelab (pip install -e .)")
        return _check_hash(path, spec)
    path = cache_dir() / spec.filename
    if path.is_file():
        return _check_hash(path, spec)
    try:
        expected = spec.sha256 or _pinned(path)
        path = download(spec.url, path, sha256=expected, opener=opener)  # verified while it streams
        return path if expected is not None else _check_hash(path, spec)  # first download: pin its hash
    except OSError as e:
        raise ConnectionError(f"cannot download {spec.name!r} from {spec.url} ({e}); connect to the internet "
                              f"or place the file at {path}") from e


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, then rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_file(path: str | Path) -> dict:
    """``torch.load`` restricted to tensors and plain containers (never unpickles code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such weights file: {path}") from None
    except Exception as e:  # the unpickler refused something, or the file is not a torch file
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        detail = next((line for line in lines if line.startswith("WeightsUnpickler error")), lines[0])
        detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)[:200]  # torch colours parts of its message
        raise ValueError(f"{path} is not a plain-tensor torch file ({type(e).__name__}: {detail}); "
                         "facelab only loads weights_only files and never unpickles code") from None


def load_checkpoint(name_or_path: str | Path, *, fmt: str, what: str, fix: str, opener=None) -> tuple[Path, dict]:
    """``(path, contents)`` of a facelab file by registry name or path, refusing any other format.

    ``what`` names the expected kind of file and ``fix`` says how to make one, for the error message.
    """
    is_path = isinstance(name_or_path, Path) or str(name_or_path).endswith((".pt", ".pth"))
    path = Path(name_or_path) if is_path else weights_path(str(name_or_path), opener=opener)
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise ValueError(f"{path} is not {what} (expected format {fmt!r}); {fix}")
    return path, ckpt


def export_generator(G: Generator, path: str | Path, *, meta: dict | None = None) -> Path:
    """Save a generator as ``{"format", "config", "state_dict", "meta"}`` (float32, CPU)."""
    state = {k: v.detach().float().cpu().clone() for k, v in G.state_dict().items()}
    meta = json.loads(json.dumps(meta or {}, default=str))  # plain JSON types only: weights_only-safe
    return atomic_torch_save({"format": GENERATOR_FORMAT, "config": G.cfg.to_dict(),
                              "state_dict": state, "meta": meta}, path)


def load_generator(name_or_path: str | Path = "world64", *, device=None, opener=None) -> Generator:
    """A generator by registry name (e.g. ``"world64"``), from a file saved by ``export_generator``,
    or from an NVIDIA StyleGAN2-ADA network pickle (``*.pkl``, e.g. ``ffhq.pkl``; read as data by
    :mod:`facelab.nvidia`, never executed).

    Returned in eval mode with gradients disabled for its parameters; ``G.meta`` holds how it was made.
    """
    from .utils import get_device

    name = str(name_or_path)
    spec = REGISTRY.get(name) if not isinstance(name_or_path, Path) else None
    if name.endswith(".pkl") or (spec is not None and spec.filename.endswith(".pkl")):
        from .nvidia import load_generator as load_nvidia_pickle
        path = weights_path(name, opener=opener) if spec is not None else Path(name)
        G = load_nvidia_pickle(path)
        if spec is not None:
            G.meta.update(name=name, url=spec.url, sha256=spec.sha256 or _pinned(path))
        return G.to(get_device(device))

    _, ckpt = load_checkpoint(name_or_path, fmt=GENERATOR_FORMAT, what="a facelab generator file", opener=opener,
                              fix="export one with facelab.hub.export_generator, or use facelab.nets.official "
                                  "to convert an official StyleGAN2 state dict")
    G = Generator(StyleGAN2Config.from_dict(ckpt["config"]))
    G.load_state_dict(ckpt["state_dict"])
    G.meta = ckpt.get("meta", {})
    return G.eval().requires_grad_(False).to(get_device(device))


def _register_shipped() -> None:
    """Register the weights listed in ``facelab/weights/manifest.json`` (written by ``ship_generator``)."""
    if MANIFEST.is_file():
        for name, entry in json.loads(MANIFEST.read_text()).items():
            register(WeightSpec(name=name, **entry), overwrite=True)


def ship_file(src: str | Path, name: str, *, kind: str, description: str = "", card: str | None = None) -> Path:
    """Copy a weight file into the package as ``facelab/weights/{name}.pt`` and record its sha256.

    The manifest is re-read just before it is rewritten, and only ``name``'s entry changes. Callers
    check first that the file loads (see :func:`ship_generator`).
    """
    dest = PACKAGE_WEIGHTS / f"{name}.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if Path(src).resolve() != dest.resolve():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    manifest[name] = {"filename": dest.name, "sha256": sha256_file(dest), "kind": kind,
                      "description": description, "card": card}
    tmp = MANIFEST.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(MANIFEST)
    _register_shipped()
    return dest


def ship_generator(src: str | Path, name: str, *, description: str = "", card: str | None = None) -> Path:
    """Copy an exported generator into the package and record its sha256 in the manifest."""
    load_generator(src)  # refuse to ship something that does not load
    return ship_file(src, name, kind="generator", description=description, card=card)


def clear_cache() -> None:
    """Delete the download cache (shipped weights are untouched)."""
    shutil.rmtree(cache_dir(), ignore_errors=True)


_register_shipped()
# Real FFHQ (online): NVIDIA's StyleGAN2-ADA PyTorch release, read as data by facelab.nvidia.
register(WeightSpec(
    name="ffhq", filename="stylegan2-ada-ffhq.pkl", sha256=None, kind="generator",
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
    description="StyleGAN2 (config-f) trained on FFHQ at 1024 px, the G_ema of NVIDIA's StyleGAN2-ADA PyTorch "
                "release (Karras et al. 2020), as PTI and e4e use it. NVIDIA Source Code License-NC "
                "(non-commercial); downloaded on first use, never shipped with facelab."), overwrite=True)
