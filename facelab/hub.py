"""Named weights: a registry, a cache, integrity checks and safe loading.

Every named weight file is either shipped inside the package (``facelab/weights/``) or downloaded
once from a URL into the cache ``$FACELAB_HOME/weights`` (default ``~/.cache/facelab/weights``).
Each entry carries a sha256; a file whose hash does not match is never used. The one exception is a
remote file whose publisher gives no hash (NVIDIA's ``ffhq.pkl``): its sha256 is pinned in
``<file>.sha256`` beside it once the downloaded file has loaded, and every later use is checked
against that pin; a first download that does not load is deleted, never pinned.

Downloads give up after ``DOWNLOAD_TIMEOUT`` seconds of silence, check the byte count against the
announced Content-Length, and are written to a temporary ``*.part`` file that is renamed into place
only when complete and verified (pins likewise), so concurrent first uses and interrupted downloads
never leave a corrupt or half-written file; ``*.part`` files left by a killed process are deleted
after ``STALE_PART_SECONDS``. Cached files get the usual permissions (0666 minus the umask).
Everything is loaded with ``torch.load(..., weights_only=True)`` (:mod:`facelab.safeload`): loading
never runs code from a file.

The loaders of the shipped networks live here, above :mod:`facelab.nets` (which holds the networks
and imports nothing above itself): :func:`load_generator`, :func:`load_identity`,
:func:`load_regressor`, :func:`load_encoder`. Each takes ``device=None`` (:func:`facelab.get_device`) and
returns the network in eval mode with frozen parameters (gradients still reach its inputs).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .nets.encoder import ENCODER_FORMAT, Encoder, EncoderConfig
from .nets.identity import DLIB_ALIASES, FACENET_URL, IDENTITY_FORMAT, DlibResNet, FaceNet, facenet_checkpoint_path
from .nets.regressor import OUTPUTS, REGRESSOR_FORMAT, AttributeRegressor
from .nets.stylegan2 import Generator, StyleGAN2Config
from .nvidia import read_generator
from .safeload import check_state, load_file, load_state, weights_only_refusal
from .utils import atomic_file, get_device

__all__ = ["DOWNLOAD_TIMEOUT", "REGISTRY", "WeightSpec", "atomic_copy", "atomic_torch_save", "atomic_write",
           "cache_dir", "check_state", "clear_cache", "download", "export_generator", "is_path", "load_checkpoint",
           "load_facenet", "load_file", "load_generator", "load_encoder", "load_identity", "load_named",
           "load_regressor", "load_state", "register", "save_encoder", "sha256_file", "ship_file", "ship_generator",
           "state_sha256", "url_env", "url_of", "weights_only_refusal", "weights_path", "world_artifact"]

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
HOME_ENV = "FACELAB_HOME"
GENERATOR_FORMAT = "facelab.generator/1"
FILE_SUFFIXES = (".pt", ".pth", ".pkl")  # a name ending so is a file path even before the file exists
DOWNLOAD_TIMEOUT = 60.0  # seconds a server may stay silent (connecting or mid-transfer)
STALE_PART_SECONDS = 3600.0  # a *.part file untouched this long belongs to a dead download
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, ssl.SSLError)


@dataclass(frozen=True)
class WeightSpec:
    """One named weight file: shipped in the package (``url=None``) or downloaded from ``url``."""

    name: str
    filename: str
    sha256: str | None  # None: a remote file without a published hash, pinned once it has loaded
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


def is_path(name_or_path) -> bool:
    """Whether a weights argument names a file rather than a registry entry: a ``Path``, a string
    naming an existing file (whatever its extension), or one ending in ``.pt``, ``.pth`` or ``.pkl``."""
    if isinstance(name_or_path, os.PathLike):
        return True
    name = str(name_or_path)
    return name.endswith(FILE_SUFFIXES) or Path(name).expanduser().is_file()


def url_env(name: str) -> str:
    """The environment variable that overrides named weights' URL: ``FACELAB_<NAME>_URL``
    (``"ffhq"`` -> ``FACELAB_FFHQ_URL``; characters other than letters and digits become ``_``)."""
    return f"FACELAB_{re.sub(r'[^0-9A-Za-z]', '_', name).upper()}_URL"


def url_of(name: str) -> str | None:
    """Where named weights are downloaded from: ``$FACELAB_<NAME>_URL`` when set (a mirror, a local
    file server), else the registry's URL; None for shipped weights (they are never downloaded)."""
    spec = REGISTRY[name]
    if spec.url is None:
        return None
    override = os.environ.get(url_env(name))
    if override and not override.startswith(("http://", "https://", "file://")):
        raise ValueError(f"{url_env(name)}={override!r} is not a URL; give an http://, https:// or file:// address "
                         "or unset it")
    return override or spec.url


def cache_dir() -> Path:
    """``$FACELAB_HOME/weights`` (default ``~/.cache/facelab/weights``)."""
    home = os.environ.get(HOME_ENV) or Path.home() / ".cache" / "facelab"
    return Path(home).expanduser() / "weights"


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
    if not pin.is_file():
        return None
    digest = pin.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"the pin {pin} is damaged (not a sha256); delete it and the file {path.name} beside it")
    return digest


def _write_pin(path: Path, digest: str) -> None:
    with atomic_file(_pin_path(path)) as f:  # readers see no pin or a whole one, never an empty file
        f.write(f"{digest}\n".encode())


def _check_hash(path: Path, spec: WeightSpec) -> Path:
    expected = spec.sha256 or _pinned(path)
    if expected is None:  # no published hash and none pinned yet: load_named pins it once it has loaded
        return path
    got = sha256_file(path)
    if got != expected:
        if spec.url is None:
            fix = ("it ships with facelab, so the installation is damaged or the file was edited: reinstall "
                   "facelab (pip install --force-reinstall facelab, or `git checkout facelab/weights` in a clone)")
        elif spec.sha256 is None:
            fix = (f"delete the file (it will be fetched again), and its pin {_pin_path(path)} too if the "
                   "publisher changed the file")
        else:
            fix = "delete the file (it will be fetched again)"
        raise ValueError(f"{path} has sha256 {got[:12]}…, expected {expected[:12]}… for {spec.name!r}; {fix}")
    return path


def _content_length(response) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value is not None and value.strip().isdigit() else None


def _remove_stale_parts(dest: Path) -> None:
    """Delete the ``*.part`` files of ``dest`` that no download has touched for ``STALE_PART_SECONDS``."""
    cutoff = time.time() - STALE_PART_SECONDS
    for part in dest.parent.glob(f"{glob.escape(dest.name)}.*.part"):
        with contextlib.suppress(OSError):  # another process may remove it first
            if part.stat().st_mtime < cutoff:
                part.unlink()


def download(url: str, dest: str | Path, *, sha256: str | None = None, opener=None,
             timeout: float | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically: the file appears only once its size matches the
    announced Content-Length and its sha256 matches ``sha256`` (when given).

    ``opener`` is a callable like ``urllib.request.urlopen`` (tests pass a fake one); the default
    gives up after ``timeout`` seconds of silence (default ``DOWNLOAD_TIMEOUT``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest)
    opener = opener or partial(urllib.request.urlopen, timeout=timeout or DOWNLOAD_TIMEOUT)
    h, size = hashlib.sha256(), 0
    with atomic_file(dest, ".part") as f, opener(url) as response:
        announced = _content_length(response)
        while chunk := response.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
            size += len(chunk)
        if announced is not None and size != announced:  # read() returns b"" at an early EOF
            raise ConnectionError(f"the download of {url} stopped after {size:,} of {announced:,} bytes")
        if sha256 is not None and h.hexdigest() != sha256:
            raise ValueError(f"download of {url} has sha256 {h.hexdigest()[:12]}…, expected {sha256[:12]}…; "
                             "the file changed upstream or the transfer was corrupted — try again")
    return dest


def _cache_error(folder: Path, e: OSError) -> OSError:
    """The cache (not the network) failed: say which folder, why, and how to choose another."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or str(e))
    setting = f"{HOME_ENV}={os.environ[HOME_ENV]}" if os.environ.get(HOME_ENV) else f"{HOME_ENV} is unset"
    return type(e)(f"cannot write the weights cache {folder} ({why}; {setting}); point {HOME_ENV} at a "
                   "writable folder or fix this one's permissions")


def weights_path(name: str, *, opener=None) -> Path:
    """Local path of the named weights, downloading into the cache if needed (sha256 verified).

    A remote file without a published hash is checked against its pin once :func:`load_named` has
    pinned it; use that to load named weights.
    """
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
    expected = spec.sha256 or _pinned(path)
    url = url_of(name)
    try:
        return download(url, path, sha256=expected, opener=opener)  # verified while it streams
    except _NETWORK_ERRORS as e:
        reason = str(e).replace("\n", " ")
        raise ConnectionError(f"cannot download {spec.name!r} from {url} ({type(e).__name__}: {reason}); connect "
                              f"to the internet and try again, set {url_env(name)} to a mirror, or place the file "
                              f"at {path}") from e
    except OSError as e:
        raise _cache_error(path.parent, e) from None
    except ValueError as e:
        if spec.sha256 is not None:
            raise
        raise ValueError(f"{e}; if the publisher changed the file, delete its pin {_pin_path(path)}") from None


def load_named(name: str, load: Callable[[Path], Any] | None = None, *, opener=None) -> tuple[Path, Any]:
    """``(path, load(path))`` for named weights (``load`` defaults to :func:`load_file`).

    A remote file without a published sha256 is pinned only after ``load`` succeeded on it; if it
    fails, the unverified download is deleted (the next call fetches it again) and the error raised.
    """
    load = load or load_file
    path = weights_path(name, opener=opener)
    if REGISTRY[name].sha256 is not None or _pinned(path) is not None:
        return path, load(path)
    digest = sha256_file(path)
    try:
        out = load(path)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    try:
        _write_pin(path, digest)
    except OSError as e:
        raise _cache_error(path.parent, e) from None
    return path, out


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and a rename: a run killed
    while writing leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def atomic_copy(src: str | Path, dest: str | Path) -> Path:
    """Copy ``src`` to ``dest`` through a temporary file and a rename (a kill leaves no half copy)."""
    dest = Path(dest)
    with open(src, "rb") as f_in, atomic_file(dest) as f_out:
        shutil.copyfileobj(f_in, f_out)
    return dest


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename (never half-written).

    Byte-for-byte reproducible: ``torch.save`` given a file *name* records it inside the archive (a
    random temporary name would change the sha256 on every save); given an open file it does not.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(obj, f)
    return path


def load_checkpoint(name_or_path: str | Path, *, fmt: str, what: str, fix: str, keys: tuple[str, ...] = (),
                    opener=None) -> tuple[Path, dict]:
    """``(path, contents)`` of a facelab file by registry name or path, refusing any other format.

    ``what`` names the expected kind of file and ``fix`` says how to make one, for the error message;
    ``keys`` must all be present.
    """
    if is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        ckpt = load_file(path)
    else:
        path, ckpt = load_named(str(name_or_path), opener=opener)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise ValueError(f"{path} is not {what} (expected format {fmt!r}); {fix}")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete file ({what} without {', '.join(missing)}); {fix}")
    return path, ckpt


def weights_sha256(G: Generator) -> str:
    """The sha256 of a generator's config and weights (float32, in state-dict order): the same network
    gives the same digest from any file, whatever the file's meta says (a re-export with a new
    description keeps it, where :func:`sha256_file` changes)."""
    h = hashlib.sha256(json.dumps(G.cfg.to_dict(), sort_keys=True, default=str).encode())
    _hash_state(h, G)
    return h.hexdigest()


def state_sha256(*nets: torch.nn.Module) -> str:
    """The sha256 of the networks' weights (float32, in state-dict order), e.g. what a run trained through."""
    h = hashlib.sha256()
    for net in nets:
        _hash_state(h, net)
    return h.hexdigest()


def _hash_state(h, net: torch.nn.Module) -> None:
    for k, v in _float32_state(net).items():
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())


def _float32_state(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """G's state dict as detached float32 CPU tensors: what a generator file holds."""
    return {k: v.detach().float().cpu().clone() for k, v in G.state_dict().items()}


def export_generator(G: Generator, path: str | Path, *, meta: dict | None = None) -> Path:
    """Save a generator as ``{"format", "config", "state_dict", "meta"}`` (float32, CPU)."""
    state = _float32_state(G)
    meta = json.loads(json.dumps(meta or {}, default=str))  # plain JSON types only: weights_only-safe
    return atomic_torch_save({"format": GENERATOR_FORMAT, "config": G.cfg.to_dict(),
                              "state_dict": state, "meta": meta}, path)


def load_generator(name_or_path: str | Path = "world64", *, device=None, opener=None) -> Generator:
    """A generator by registry name (e.g. ``"world64"``), from a file saved by ``export_generator``,
    or from an NVIDIA StyleGAN2-ADA network pickle (``*.pkl``, e.g. ``ffhq.pkl``; read as data by
    :mod:`facelab.nvidia`, never executed). A string naming an existing file is a path.

    Returned in eval mode with gradients disabled for its parameters; ``G.meta`` holds how it was made.
    """
    spec = None if is_path(name_or_path) else REGISTRY.get(str(name_or_path))
    if spec is None and Path(name_or_path).suffix == ".pkl":
        G = read_generator(Path(name_or_path).expanduser())
        G.meta["crop"] = "ffhq"  # NVIDIA's face networks draw FFHQ-aligned faces (facelab.worlds.crop_of)
        return G.to(get_device(device))
    if spec is not None and spec.filename.endswith(".pkl"):
        path, G = load_named(spec.name, read_generator, opener=opener)
        G.meta.update(name=spec.name, url=url_of(spec.name), sha256=spec.sha256 or _pinned(path), crop="ffhq")
        return G.to(get_device(device))

    fix = "export one with facelab.hub.export_generator"
    path, ckpt = load_checkpoint(name_or_path, fmt=GENERATOR_FORMAT, what="a facelab generator file", opener=opener,
                                 keys=("config", "state_dict"), fix=f"{fix}, or use facelab.nets.official to "
                                                                    "convert an official StyleGAN2 state dict")
    try:
        cfg = StyleGAN2Config.from_dict(ckpt["config"])
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its generator config is not valid ({e}); {fix} again") from None
    G = Generator(cfg)
    load_state(G, ckpt["state_dict"], path, fix=f"the file was altered or damaged; {fix} again")
    G.meta = ckpt.get("meta", {})
    if spec is not None:  # loaded by name: its world's other weights (e.g. encoder_world64) go by that name
        G.meta["name"] = spec.name
    return G.eval().requires_grad_(False).to(get_device(device))


def load_facenet(*, device=None) -> FaceNet:
    """FaceNet (VGGFace2) from torch's local checkpoint cache; never downloads."""
    path = facenet_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"FaceNet weights are not cached at {path}; download {FACENET_URL} to that "
                                "path (or run InceptionResnetV1(pretrained='vggface2') once while online)")
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    state = load_file(path)  # tensors only
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # classifier head unused
    net = InceptionResnetV1(pretrained=None, classify=False)
    net.load_state_dict(state)
    model = FaceNet(net)
    model.meta = {"source": str(path), "weights": "facenet-pytorch InceptionResnetV1, VGGFace2"}
    return model.eval().requires_grad_(False).to(get_device(device))


def load_identity(name: str | Path = "dlib", *, device=None, opener=None) -> nn.Module:
    """An identity embedder (:mod:`facelab.nets.identity`) in eval mode, parameters frozen.

    ``name``: ``"dlib"`` (the shipped dlib ResNet port, offline, sha256 checked), a path to a
    ``.pt`` file written by ``facelab.train.convert_dlib``, or ``"facenet"`` (only if its weights
    are already cached locally, see :func:`facelab.nets.identity.facenet_checkpoint_path`). The model
    maps images ``[N, 3, S, S]`` in [-1, 1] to unit vectors ``[N, D]``; ``model.input_size`` is S.
    """
    if str(name) == "facenet":
        return load_facenet(device=device)
    if not is_path(name) and str(name) not in DLIB_ALIASES:
        raise KeyError(f"unknown identity model {name!r}; choose 'dlib', 'facenet' or a .pt file path")
    fix = "convert dlib's model with: python -m facelab.train.convert_dlib MODEL.dat"
    path, ckpt = load_checkpoint(name if is_path(name) else DLIB_ALIASES[str(name)], fmt=IDENTITY_FORMAT,
                                 what="a facelab identity file", fix=fix, keys=("state_dict",), opener=opener)
    net = DlibResNet()
    state = ckpt["state_dict"]
    if isinstance(state, dict):  # stored float16 or float32
        state = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    load_state(net, state, path, fix=f"the file was altered or damaged; {fix}")
    net.meta = ckpt.get("meta", {})
    return net.eval().requires_grad_(False).to(get_device(device))


def load_regressor(name: str | Path = "attribute_regressor", *, device=None) -> AttributeRegressor:
    """H (:mod:`facelab.nets.regressor`) by registry name (the shipped ``"attribute_regressor"``) or
    from a ``.pt`` path; eval mode, frozen. Gradients still reach the images, so H can serve as a loss."""
    fix = "train one with: python -m facelab.train.regressor fit"
    path, ckpt = load_checkpoint(name, fmt=REGRESSOR_FORMAT, what="a facelab attribute regressor", fix=fix,
                                 keys=("config", "state_dict"))
    cfg = ckpt["config"]
    if tuple(cfg["attributes"]) != tuple(OUTPUTS):
        raise ValueError(f"{path} predicts {cfg['attributes']}, this facelab expects {list(OUTPUTS)}; retrain it")
    H = AttributeRegressor(width=cfg["width"])
    load_state(H, ckpt["state_dict"], path, fix=f"the file was altered or damaged; {fix}")
    H.meta = ckpt.get("meta", {})
    return H.eval().requires_grad_(False).to(get_device(device))


def half_weights(state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float16) -> dict:
    """A state dict for storage: matrices and kernels (``ndim >= 2``) in ``dtype`` (half the size),
    other floating tensors float32, integer buffers as they are. Loading casts them back to float32
    (``load_state_dict`` copies into the module's float32 tensors), so each weight is rounded once."""
    return {k: ((v.to(dtype) if v.ndim >= 2 else v.float()) if v.is_floating_point() else v).detach().cpu().clone()
            for k, v in state.items()}


def save_encoder(E: Encoder, path: str | Path, *, meta: dict | None = None,
                 weight_dtype: torch.dtype = torch.float16) -> Path:
    """Save an encoder as ``{"format", "config", "num_ws", "w_dim", "stage", "state_dict", "meta"}``.

    Its convolution and linear weights are stored in ``weight_dtype`` (default float16: half the
    size; loading casts them back to float32, so each weight is rounded once); biases and ``w_avg``
    stay float32.
    """
    state = half_weights(E.state_dict(), weight_dtype)
    meta = json.loads(json.dumps(meta or {}, default=str))
    return atomic_torch_save({"format": ENCODER_FORMAT, "config": E.config.to_dict(), "num_ws": E.num_ws,
                              "w_dim": E.w_dim, "stage": int(E.stage), "state_dict": state, "meta": meta}, path)


def world_artifact(kind: str, name_or_path: str | Path) -> str | Path:
    """The registry name of world ``name_or_path``'s shipped ``kind`` (``"mapper"``, ``"encoder"``,
    ``"boundaries"``), e.g. ``world64`` -> ``mapper_world64``; anything else (a full registry name, a
    path) as given. So each loader takes a world's name, as :func:`facelab.interpret.load_boundaries` does."""
    key = f"{kind}_{name_or_path}"
    return key if not is_path(name_or_path) and key in REGISTRY and REGISTRY[key].kind == kind else name_or_path


def load_encoder(name_or_path: str | Path = "world64", *, device=None) -> Encoder:
    """An e4e-style encoder (:mod:`facelab.nets.encoder`): a world's shipped one by its name (``"world64"``,
    or the registry name ``"encoder_world64"``) or one from a ``.pt`` path; eval mode, frozen, float32."""
    fix = "train one with: python -m facelab.train.encoder"
    path, ckpt = load_checkpoint(world_artifact("encoder", name_or_path), fmt=ENCODER_FORMAT, what="a facelab encoder",
                                 fix=fix, keys=("config", "num_ws", "w_dim", "state_dict"))
    try:
        cfg = EncoderConfig.from_dict(ckpt["config"])
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its encoder config is not valid ({e}); {fix}") from None
    E = Encoder(ckpt["num_ws"], ckpt["w_dim"], config=cfg)
    state = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in ckpt["state_dict"].items()}
    load_state(E, state, path, fix=f"the file was altered or damaged; {fix}")
    E.stage = int(ckpt.get("stage", E.num_ws))  # layers trained with their delta; the others stay at w
    E.meta = ckpt.get("meta", {})
    return E.eval().requires_grad_(False).to(get_device(device))


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
        atomic_copy(src, dest)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    manifest[name] = {"filename": dest.name, "sha256": sha256_file(dest), "kind": kind,
                      "description": description, "card": card}
    atomic_write(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
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
