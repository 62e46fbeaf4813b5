"""Image metrics shared by the topic modules: identity similarity, a perceptual distance, MSE.

The distances (:func:`identity_similarity`, :func:`perceptual_distance`, :func:`mse`) take image
batches ``[N, 3, H, W]`` in [-1, 1] and return one value per image pair, ``[N]``, differentiable with
respect to the images (the networks' parameters are frozen). The judges built on them
(:func:`distortion`, :func:`editability`, the ``judged_*`` functions) measure without gradients and
return dicts or small records.

**Face chips from the world's crop.** The identity network (dlib's ResNet, ported in
:mod:`facelab.nets.identity`) expects 150 px chips aligned like ``dlib.get_face_chip(img, shape,
150, padding=0.25)``. Faces of the embedded world (``load_generator("world64")``, ``sample_teacher``)
are already roughly aligned by construction, so :func:`world_chips` cuts every image with *one*
fixed similarity transform (bilinear ``grid_sample``, differentiable; :mod:`facelab.geometry`): it
sends the mean MTCNN landmarks of world faces (``facelab.geometry.WORLD_TEMPLATE``, the world's one
measured crop, :func:`facelab.faces.measure_template`) onto where MTCNN's landmarks sit in a dlib chip of
padding 0.25 (``IDENTITY_CHIP_TEMPLATE``).

That template comes from ``facelab.geometry.CHIP_TEMPLATE`` (MTCNN's eyes and nose in a dlib chip of
padding 0.2, measured on two public-domain portraits), moved to padding 0.25 by
:func:`facelab.geometry.chip_template`: a point at ``u`` in the padding-0.2 chip sits at
``0.5 + (u - 0.5) * 1.4 / 1.5`` in the padding-0.25 chip (checked with ``dlib.get_face_chip_details``:
same centre, extent ratio 1.4/1.5; and MTCNN run on the padded dlib chips in ``tests/data`` lands
within about 3 px of the template). Chip pixel ``j`` covers ``[j, j + 1) / size``.
(dlib's own sampler maps the chip's corner pixel *centres* onto its rectangle, which differs from
this by well under a pixel at 150 px.) Where the chip reaches past the image (world faces are cut
at the chin) the edge pixels repeat.

**Other crops** (``align=``): faces of NVIDIA's FFHQ networks sit in the FFHQ dataset's crop, smaller
than in the world's (eye distance 0.25 of the side against 0.30), so ``align="ffhq"`` cuts their
chips with ``facelab.geometry.FFHQ_TEMPLATE`` instead (MTCNN on the sample photos aligned the FFHQ
way). Pass a World's ``.crop``; the algorithms handed a generator (``project``, ``tune``,
``different_people_identity``, ``editability``) follow its crop (:func:`generator_crop`), which
``load_generator`` and ``World.G`` record in ``G.meta``. With the world's template, an FFHQ-aligned
face's chip took in 1.2x too much around it (identity with the same face aligned the world's way
0.93-0.98 on ten teacher faces, against 0.98-1.00 with its own template; ``tests/test_metrics.py``).

**Perceptual distance** (:class:`PerceptualDistance`, name ``"dlib-lpips"``): LPIPS (Zhang et al.,
"The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018) computed on
the dlib ResNet's features instead of AlexNet's. For layers ``l`` with features ``f_l`` [C, H, W],
each position's channel vector is scaled to unit length and::

    d(a, b) = sum_l  mean_{h,w}  || f_l(a)[:, h, w] / |f_l(a)[:, h, w]|  -  (same for b) ||^2

Layers: the stem (after conv 7x7/2 + affine + ReLU, 72x72) and the end of each of the first four
residual stages (35, 17, 8, 4 px); the last stage (2x2, 256 channels) is left out, it is the
identity descriptor itself rather than image structure. LPIPS learns a non-negative weight per
channel (its "lin" layers) from human 2AFC judgements; no such weights exist for this network, so
every channel and layer weighs the same: the paper's "baseline" variant (``lpips=False`` in the
reference code), which already ranks distortions well. Each layer's term lies in [0, 4].
``backend="lpips"`` uses the real LPIPS (AlexNet, with its learned weights) when the ``lpips``
package and torchvision's AlexNet weights are available locally (they cannot be downloaded here).
See ``facelab/weights/dlib_resnet.md`` for a validation on real and world faces
(``bench/perceptual_validation.py``).

    import facelab.metrics as M
    M.identity_similarity(x, y)        # [N] cosine of dlib identity embeddings (1 = same face)
    M.perceptual_distance(x, y)        # [N] dlib-lpips, 0 for identical images
    M.mse(x, y)                        # [N] mean squared error per image

**Fixed references.** :class:`ReferenceDistance` compares many candidates with references that do
not change (an optimisation's target): with the default dlib-lpips the references are embedded once.
The projector (:mod:`facelab.projector`) and PTI use it. Images are checked for shape here, not for
values (these functions run at every optimisation step; see :mod:`facelab.imaging`).

**Inversion quality** (notebook 02, e4e's two axes): :func:`distortion` bundles the three distances
of a reconstruction from its target; :func:`editability` edits latents along attribute boundaries
and measures how much the attribute moves (by the regressor H), how much identity survives, and
how realistic the edit stays (MTCNN's face confidence; the latent's distance from W).

    M.distortion(recon, target)                    # {"mse", "perceptual", "identity"}: [N] each
    M.editability(G, proj.ws, boundaries, H, noise=proj.noise)["mean"]["age"]["change"]
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import CROP_TEMPLATES, WORLD_TEMPLATE, chip_template, similarity, warp
from .hub import load_identity
from .imaging import check_images, resize
from .latents import as_wplus, w_distance
from .nets.attributes import detect_faces
from .nets.identity import DLIB_CHIP_PADDING, DLIB_INPUT_SIZE, DLIB_STAGES, DlibResNet
from .nets.resample import max_pool2d
from .utils import device_key, device_of, get_device, on_device

# MTCNN's left eye, right eye and nose in a dlib chip of padding 0.25 (150 px chips: 48.1, 101.9 px
# for the eyes at y 46.3, the nose at 75.0, 78.4), converted from the padding-0.2 template (module doc).
IDENTITY_CHIP_TEMPLATE = chip_template(DLIB_CHIP_PADDING)  # [3, 2], chip units [0, 1]

PERCEPTUAL_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage4")
# layer name -> index (into DlibResNet.units) of the last residual unit of that stage
_STAGE_ENDS = {f"stage{i + 1}": end - 1 for i, end in enumerate(itertools.accumulate(n for _, n, _ in DLIB_STAGES))}

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"  # torchvision's IMAGENET1K_V1


# ---------------------------------------------------------------------------------------------
# Checks


def _check_batch(images, who: str, *, name: str = "images") -> None:
    check_images(images, name, who=who, values=False)


def _check_pair(a, b, who: str) -> None:
    _check_batch(a, who, name="a")
    _check_batch(b, who, name="b")
    if a.shape != b.shape:
        raise ValueError(f"{who}: a and b must have the same shape (pairs of images), got {list(a.shape)} and "
                         f"{list(b.shape)}; resize with facelab.imaging.resize or compare equal batches")


# ---------------------------------------------------------------------------------------------
# Alignment: the world's crop -> dlib face chips


def world_chips(images: torch.Tensor, size: int = DLIB_INPUT_SIZE, *,
                landmarks: torch.Tensor | None = None) -> torch.Tensor:
    """dlib-style face chips (padding 0.25) [N, 3, size, size] from world-aligned faces [N, 3, S, S].

    One fixed similarity transform for every image (differentiable, bilinear): the mean MTCNN eyes
    and nose of the world's crop (``WORLD_TEMPLATE``, fractions of the side, so any S works) go to
    ``IDENTITY_CHIP_TEMPLATE``. ``landmarks`` [5, 2] or [3, 2] (fractions of the side; eyes, nose
    first) replaces them for another fixed crop. Images in [-1, 1]; out-of-image pixels repeat the edge.
    """
    _check_batch(images, "world_chips")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"world_chips expects square world-aligned faces [N, 3, S, S], got {list(images.shape)}; "
                         "align photos to the world's crop first")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"world_chips: size must be an int >= 8, got {size!r}")
    z, t = _world_transform(images.shape[-1], landmarks)  # chip unit -> image pixel
    n = images.shape[0]
    return warp(images, z.expand(n), t.expand(n), size, fill="border")  # [N, 3, size, size]


def _world_transform(side: int, landmarks=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [1], t [1]) complex: chip point u + iv in [0, 1]^2 sits at image pixel z (u + iv) + t."""
    marks = WORLD_TEMPLATE if landmarks is None else torch.as_tensor(landmarks, dtype=torch.float32)
    if marks.ndim != 2 or marks.shape[0] < 3 or marks.shape[1] != 2:
        raise ValueError(f"landmarks must be [5, 2] or [3, 2] (eyes, nose first, fractions of the side), "
                         f"got {list(marks.shape)}")
    return similarity(IDENTITY_CHIP_TEMPLATE, marks[None, :3].float() * side)


def world_to_chip(points: torch.Tensor, side: int, size: int = DLIB_INPUT_SIZE, *,
                  landmarks: torch.Tensor | None = None) -> torch.Tensor:
    """Where :func:`world_chips` puts image points: pixels [..., 2] of a side x side image -> chip pixels.

    Continuous coordinates, pixel ``i`` covering [i, i + 1) (as MTCNN's ``detect_faces`` reports them).
    """
    z, t = (v.to(points.device) for v in _world_transform(side, landmarks))
    p = torch.complex(points[..., 0].float(), points[..., 1].float())
    u = (p - t) / z * size
    return torch.stack([u.real, u.imag], dim=-1)


# ---------------------------------------------------------------------------------------------
# Identity


@functools.lru_cache(maxsize=4)
def _dlib(device: str) -> DlibResNet:
    return load_identity("dlib", device=device)


ALIGNS = (*CROP_TEMPLATES, "chip")  # what align= takes: a crop's name (a World's .crop), or dlib chips


def generator_crop(G) -> str:
    """The crop a generator's faces are in: ``G.meta["crop"]`` (``load_generator`` sets ``"ffhq"`` for
    NVIDIA's networks, a :class:`facelab.worlds.World` its own crop), else ``"world"``."""
    return getattr(G, "meta", {}).get("crop", "world")


def _check_align(align) -> None:
    if align not in ALIGNS:
        raise ValueError(f"align must be a crop, 'world' (faces in world64's crop) or 'ffhq' (the FFHQ dataset's: "
                         f"pass world.crop), or 'chip' (dlib-aligned chips); got {align!r}")


def _chips(images: torch.Tensor, size: int, align: str) -> torch.Tensor:
    _check_align(align)
    if align == "chip":  # already dlib-aligned chips (of any size)
        return resize(images, size)
    return world_chips(images, size, landmarks=CROP_TEMPLATES[align])


def identity_embedding(images: torch.Tensor, *, net: nn.Module | None = None, align: str = "world") -> torch.Tensor:
    """Unit identity embeddings [N, 128] of faces [N, 3, H, W] in [-1, 1] (differentiable).

    ``align="world"``: faces in world64's crop, cut into chips by :func:`world_chips`; ``align="ffhq"``:
    faces in the FFHQ crop (:data:`facelab.geometry.FFHQ_TEMPLATE`): pass a World's ``.crop``;
    ``align="chip"``: images already aligned like dlib's chips (resized to the net's input size).
    ``net``: an identity network from ``load_identity`` (default: the dlib ResNet, cached per device).
    """
    _check_batch(images, "identity_embedding")
    net = net if net is not None else _dlib(device_key(images.device))
    size = getattr(net, "input_size", DLIB_INPUT_SIZE)
    chips = _chips(images, size, align)
    weight = next(net.parameters(), None)  # the net computes in its own dtype, whatever the images'
    return F.normalize(net(chips if weight is None else chips.to(weight.dtype)), dim=1)  # [N, D], unit length


def identity_similarity(a: torch.Tensor, b: torch.Tensor, *, net: nn.Module | None = None,
                        align: str = "world") -> torch.Tensor:
    """Cosine similarity [N] of the identity embeddings of paired faces a, b [N, 3, H, W] in [-1, 1].

    1 for the same image. With the dlib network, photos of different people still score about 0.8
    (``facelab/weights/dlib_resnet.md``): compare against a same-person reference rather than 0.
    Differentiable with respect to both images; ``net`` and ``align`` as in :func:`identity_embedding`.
    """
    _check_pair(a, b, "identity_similarity")
    emb = identity_embedding(torch.cat([a, b]), net=net, align=align)  # [2N, D]
    ea, eb = emb.chunk(2)
    return (ea * eb).sum(1)  # [N]


# ---------------------------------------------------------------------------------------------
# Perceptual distance


def dlib_features(net: DlibResNet, chips: torch.Tensor,
                  layers: tuple[str, ...] = PERCEPTUAL_LAYERS) -> list[torch.Tensor]:
    """Intermediate activations of the dlib ResNet for chips [N, 3, 150, 150] in [-1, 1].

    ``layers`` from ``"stem"`` (ReLU after the first conv, [N, 32, 72, 72]) and ``"stage1"`` ...
    ``"stage5"`` (after the last unit of each stage: 35, 17, 8, 4, 2 px); returned in network order.
    """
    _check_layers(layers)
    mean = net.input_mean.to(chips.dtype)[:, None, None]
    x = ((chips + 1) * 127.5 - mean) / 256  # dlib's input scaling, as in DlibResNet.descriptor
    x = F.relu(net.affine(net.conv(x)))  # [N, 32, 72, 72]
    feats = [x] if "stem" in layers else []
    last = max((_STAGE_ENDS[name] for name in layers if name != "stem"), default=-1)
    ends = {_STAGE_ENDS[name] for name in layers if name != "stem"}
    x = max_pool2d(x, 3, stride=2)  # [N, 32, 35, 35]
    for i, unit in enumerate(net.units[:last + 1]):
        x = unit(x)
        if i in ends:
            feats.append(x)
    return feats


def _check_layers(layers) -> None:
    unknown = [name for name in layers if name != "stem" and name not in _STAGE_ENDS]
    if unknown or not layers or len(set(layers)) != len(layers):
        raise ValueError(f"unknown, repeated or no layers in {list(layers)}; choose distinct names from "
                         f"{['stem', *_STAGE_ENDS]}")


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each position's channel vector to unit length (LPIPS' normalize_tensor)."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


def _alexnet_checkpoint() -> Path:
    """Where torchvision caches the AlexNet weights that ``lpips`` loads (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_URL.rsplit("/", 1)[-1]


class PerceptualDistance(nn.Module):
    """LPIPS-style distance [N] between image batches a, b [N, 3, H, W] in [-1, 1]; 0 when identical.

    ``backend="dlib"`` (name ``"dlib-lpips"``): unit-normalised dlib ResNet features of
    ``layers``, squared differences summed over channels, averaged over positions, summed over
    layers with equal weights (LPIPS' baseline variant; see the module doc). ``align="world"``
    first cuts :func:`world_chips` (faces in world64's crop, any size), ``align="ffhq"`` the same from
    FFHQ-aligned faces; ``align="chip"`` takes dlib-aligned chips and only resizes them to 150 px.
    ``backend="lpips"`` (name ``"lpips-alex"``): the ``lpips`` package's AlexNet LPIPS v0.1 on the
    images as they are; needs ``pip install lpips`` and torchvision's AlexNet weights cached locally.
    Parameters are frozen; gradients reach the images. ``name`` records which metric produced a number.
    """

    name = "dlib-lpips"

    def __init__(self, backend: str = "dlib", *, layers: tuple[str, ...] = PERCEPTUAL_LAYERS,
                 align: str = "world", net: DlibResNet | None = None, device=None):
        super().__init__()
        if backend not in ("dlib", "lpips"):
            raise ValueError(f"backend must be 'dlib' or 'lpips', got {backend!r}")
        _check_align(align)
        self.backend, self.align, self.layers = backend, align, tuple(layers)
        if backend == "lpips" and (net is not None or self.layers != PERCEPTUAL_LAYERS or align != "world"):
            raise ValueError("layers=, align= and net= choose the dlib backend's features; backend='lpips' takes "
                             "none of them (it compares the images as they are)")
        if backend == "lpips":
            self.name = "lpips-alex"
            self.net = _load_lpips(device)
        else:
            _check_layers(self.layers)
            net = net if net is not None else load_identity("dlib", device=device)
            self.net = net.eval().requires_grad_(False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, layers={self.layers}, align={self.align!r}"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_pair(a, b, f"PerceptualDistance({self.name})")
        if self.backend == "lpips":
            return self.net(a, b, normalize=False).flatten()  # [N]
        n = a.shape[0]
        feats = self.features(torch.cat([a, b]))  # one pass for both halves
        return self.from_features([f[:n] for f in feats], [f[n:] for f in feats])

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features of ``layers`` for images [N, 3, H, W] (dlib backend only).

        With :meth:`from_features`, a fixed target is embedded once (e.g. under ``no_grad``) and
        compared with many candidates: ``d(a, b) == from_features(features(a), features(b))``.
        """
        if self.backend != "dlib":
            raise ValueError(f"features() exists for the dlib backend only, not {self.backend!r}")
        chips = _chips(images, DLIB_INPUT_SIZE, self.align)  # [N, 3, 150, 150]
        return [_unit(f) for f in dlib_features(self.net, chips.to(self.net.input_mean.dtype), self.layers)]

    @staticmethod
    def from_features(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """The distance [N] between two lists of :meth:`features` (same layers, same N)."""
        total = fa[0].new_zeros(fa[0].shape[0])
        for x, y in zip(fa, fb):
            total = total + (x - y).square().sum(1).mean((1, 2))  # [N]
        return total


def _load_lpips(device) -> nn.Module:
    try:
        import lpips
    except ImportError as e:
        raise ModuleNotFoundError("backend='lpips' needs the lpips package, which is not installed: "
                                  "pip install lpips (or use backend='dlib')") from e
    ckpt = _alexnet_checkpoint()
    if not ckpt.is_file():
        raise FileNotFoundError(f"backend='lpips' needs torchvision's AlexNet ImageNet weights, not cached at "
                                f"{ckpt}: download {ALEXNET_URL} there while online (or use backend='dlib')")
    model = lpips.LPIPS(net="alex", verbose=False)
    return model.eval().requires_grad_(False).to(get_device(device))


@functools.lru_cache(maxsize=4)
def _perceptual(device: str, backend: str, align: str = "world") -> PerceptualDistance:
    return PerceptualDistance(backend, device=device, **({"align": align} if backend == "dlib" else {}))


def default_perceptual(device=None, backend: str = "dlib", align: str = "world") -> PerceptualDistance:
    """The cached :class:`PerceptualDistance` that :func:`perceptual_distance` uses on ``device``
    (None: ``get_device()``) for faces in crop ``align`` (the dlib backend's; a World's ``.crop``)."""
    _check_align(align)
    return _perceptual(device_key(get_device(device)), backend, align)


def resolve_perceptual(perceptual, device,
                       align: str = "world") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The distance an algorithm uses: ``None`` -> :func:`default_perceptual` on ``device`` for faces in
    crop ``align`` (the generator's: :func:`generator_crop`); an ``nn.Module`` is moved to ``device`` in
    eval mode; any other callable ``(a, b) -> [N]`` as it is."""
    if perceptual is None:
        perceptual = default_perceptual(device, align=align)  # one cached instance per device and crop
    if isinstance(perceptual, nn.Module):
        perceptual = perceptual.to(device).eval()
    if not callable(perceptual):
        raise TypeError(f"perceptual must be a callable (a, b) -> [N] distances, got {type(perceptual).__name__}")
    return perceptual


def checked_distance(perceptual, a: torch.Tensor, b) -> torch.Tensor:
    """``perceptual(a, b)``, refused in one line unless it is one distance per image ``[N]``."""
    d = perceptual(a, b)
    if not (isinstance(d, torch.Tensor) and d.shape == (a.shape[0],)):
        raise ValueError(f"perceptual(a, b) must return one distance per image [{a.shape[0]}], "
                         f"got {getattr(d, 'shape', type(d).__name__)}")
    return d


class ReferenceDistance:
    """``perceptual(a, b)`` where ``b`` are fixed references (no gradient reaches them).

    ``refs(b)`` prepares references once; ``dist(a, refs)`` -> ``[N]``; ``cat(r1, r2)`` joins two
    prepared sets. For any callable the references are just the detached images. For facelab's
    dlib distance (a :class:`PerceptualDistance` with ``backend="dlib"``, or anything with its
    ``features`` / ``from_features``) they are its unit-normalised features, computed once under
    ``no_grad``: an optimisation's target is embedded once instead of at every step, and no backward
    pass runs through the reference half of a batch. Same numbers as ``perceptual(a, b)``.
    """

    def __init__(self, perceptual):
        self.perceptual = perceptual
        fast = getattr(perceptual, "backend", None) == "dlib" and hasattr(perceptual, "features") \
            and hasattr(perceptual, "from_features")
        self.net = getattr(perceptual, "net", perceptual) if fast else None

    def refs(self, b: torch.Tensor):
        if self.net is None:
            return b.detach()
        with torch.no_grad():
            return self.perceptual.features(b.detach())

    @staticmethod
    def cat(r1, r2):
        if isinstance(r1, torch.Tensor):
            return torch.cat([r1, r2])
        return [torch.cat([x, y]) for x, y in zip(r1, r2)]

    def dist(self, a: torch.Tensor, refs) -> torch.Tensor:
        if self.net is None:
            return checked_distance(self.perceptual, a, refs)
        return checked_distance(lambda x, r: self.perceptual.from_features(self.perceptual.features(x), r), a, refs)


def perceptual_distance(a: torch.Tensor, b: torch.Tensor, *, backend: str = "dlib",
                        align: str = "world") -> torch.Tensor:
    """:class:`PerceptualDistance` [N] of faces in crop ``align`` (world64's by default; a World's
    ``.crop``), one cached instance per device."""
    _check_pair(a, b, "perceptual_distance")
    return default_perceptual(a.device, backend, align)(a, b)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image pair [N] of a, b [N, 3, H, W] (in [-1, 1] units)."""
    _check_pair(a, b, "mse")
    return (a - b).square().flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------
# Inversion quality: distortion and editability (notebook 02)


def distortion(recon: torch.Tensor, target: torch.Tensor, *, identity: bool = True, align: str = "world") -> dict:
    """How far reconstructions are from their targets: ``{"mse", "perceptual", "identity"}``, each ``[N]``.

    recon, target: paired faces ``[N, 3, H, W]`` in [-1, 1], in crop ``align`` (world64's by default;
    pass a World's ``.crop``), of one shape.
    ``"mse"``: :func:`mse`; ``"perceptual"``: :func:`perceptual_distance` (the default dlib-LPIPS;
    its name is under ``"perceptual_metric"``, a string); ``"identity"``: :func:`identity_similarity`
    (1 = same person; higher is *better*, unlike the other two), left out with ``identity=False``.
    No gradients; tensors on the CPU.

        d = distortion(proj.synthesize(G), target)
        d["perceptual"].mean()
    """
    _check_pair(recon, target, "distortion")
    with torch.no_grad():
        out = {"mse": mse(recon, target).cpu(),
               "perceptual": perceptual_distance(recon, target, align=align).cpu(),
               "perceptual_metric": PerceptualDistance.name}
        if identity:
            out["identity"] = identity_similarity(recon, target, align=align).cpu()
    return out


EDITABILITY_METRICS = ("change", "identity", "face_conf", "w_distance")


def _boundary_items(boundaries) -> list[tuple[str, object]]:
    items = list(boundaries.items()) if isinstance(boundaries, Mapping) else \
        [(getattr(b, "attribute", "") or f"b{i}", b) for i, b in enumerate(boundaries)]
    if not items:
        raise ValueError("editability needs at least one boundary (a dict {name: Boundary} or a list)")
    return items


def _boundary_step(name: str, b, step) -> float:
    if isinstance(step, Mapping):
        if name not in step:
            raise ValueError(f"step has no entry for boundary {name!r}; give one number per boundary")
        step = step[name]
    if isinstance(step, str):
        if step != "std":
            raise ValueError(f"step must be a number (latent units), 'std' or a dict of numbers, got {step!r}")
        std = getattr(getattr(b, "report", None), "distance_std", None)
        if std is None:
            raise ValueError(f"step='std' needs boundaries with report.distance_std, and {name!r} has none; "
                             "give the step as a number (latent units)")
        return float(std)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
        raise ValueError(f"step must be a finite number (latent units), 'std' or a dict of numbers, got {step!r}")
    return float(step)


@torch.no_grad()
def editability(G, ws: torch.Tensor, boundaries, H, *, step: float | str = "std", noise=None,
                noise_mode: str = "const", identity: bool = True, realism: bool = True, central: bool = False,
                return_images: bool = False) -> dict:
    """How well latents edit: attribute change, identity kept, and realism, per boundary and per sample.

    G: a facelab ``Generator``. ws: W ``[N, w_dim]`` or W+ ``[N, num_ws, w_dim]`` latents, e.g. an
    inversion's ``proj.ws``. boundaries: ``{name: boundary}`` (or a list, named by ``.attribute``),
    each with a unit ``normal`` ``[w_dim]`` in W and the ``attribute`` H should see move (default:
    the name). H: an attribute regressor (``fl.load_regressor()``): images -> ``[N, K]``, with
    ``H.index(attribute)``. step: ``"std"`` (each boundary's ``report.distance_std``), a number in
    latent units, or ``{name: number}``. noise: the noise maps to render with (``proj.noise``, one
    ``[N, 1, r, r]`` per layer), else ``noise_mode``.

    Each latent is edited as ``ws + step * normal`` on *every* W+ layer (InterFaceGAN's edit) and
    both versions are rendered (clamped to [-1, 1]). Per boundary and sample ``[N]`` (CPU):

    * ``change``: ``(H(edited) - H(original))[attribute] / step``, the target attribute's change per
      latent unit of the edit (0 when ``step`` is 0), in H's units (years, probabilities, ...); with
      ``central=True`` the central difference ``(H(ws + step n) - H(ws - step n)) / 2 step`` instead
      (as ``facelab.interpret.rescore``: less sensitive to the curvature of H along the edit; the
      other metrics still describe the ``+step`` edit);
    * ``identity``: :func:`identity_similarity` of original and edited render (1 = same person);
    * ``face_conf``: MTCNN's face confidence on the edited render (0 = no face found), a realism
      proxy (``facelab.nets.attributes.detect_faces``), with ``realism=True``;
    * ``w_distance``: how far the edited latent lies from the W distribution
      (``facelab.latents.w_distance``, Mahalanobis; about 1 for a typical sample of W).

    Returns ``{"boundaries": [names], "attribute": {name: str}, "step": {name: float},
    "per_sample": {metric: {name: [N]}}, "mean": {name: {metric: float}}, "base": {"face_conf",
    "w_distance": [N]}}`` (the unedited latents' realism), and ``"images": {name: [N, 3, R, R]}``
    plus ``"original"`` with ``return_images=True``. Metrics turned off are absent.
    """
    if not hasattr(H, "index"):
        raise TypeError("H must be an attribute regressor with .index(attribute) (fl.load_regressor())")
    device = device_of(G)
    ws = as_wplus(ws, G).detach().to(device, torch.float32)  # [N, num_ws, w_dim]
    render = _renderer(G, noise, noise_mode, device)
    base = render(ws)
    h_base = H(base).float()  # [N, K]
    out = {"boundaries": [], "attribute": {}, "step": {}, "per_sample": {}, "mean": {},
           "base": {"w_distance": w_distance(ws, G).cpu()}}
    if realism:
        out["base"]["face_conf"] = detect_faces(base, device=device).conf
    if return_images:
        out["images"] = {"original": base.cpu()}
    for name, b in _boundary_items(boundaries):
        attribute = getattr(b, "attribute", "") or name
        h = _boundary_step(name, b, step)
        if getattr(b, "space", "w") == "z":  # as long as a W normal in many worlds: only .space tells
            raise ValueError(f"boundary {name!r} lives in Z; editability edits W+ latents: "
                             "load the W boundaries (load_boundaries(..., space='w'))")
        normal = torch.as_tensor(getattr(b, "normal", b)).detach().float().flatten().to(device)
        if normal.shape != (G.w_dim,):
            raise ValueError(f"boundary {name!r}: normal must be a W direction [{G.w_dim}], got {list(normal.shape)}")
        values, img = _edit_metrics(G, ws, normal, h, H.index(attribute), H, h_base, base, render,
                                    identity=identity, realism=realism, central=central)
        out["boundaries"].append(name)
        out["attribute"][name], out["step"][name] = attribute, h
        for k, v in values.items():
            out["per_sample"].setdefault(k, {})[name] = v
        out["mean"][name] = {k: float(values[k].float().mean()) for k in EDITABILITY_METRICS if k in values}
        if return_images:
            out["images"][name] = img.cpu()
    return out


def _renderer(G, noise, noise_mode: str, device) -> Callable[[torch.Tensor], torch.Tensor]:
    """ws [N, num_ws, w_dim] -> images [N, 3, R, R] clamped to [-1, 1], with ``noise`` maps or ``noise_mode``."""
    def render(x):
        if noise is not None:
            return G.synthesis(x, noise=[nz.to(device) for nz in noise]).clamp(-1, 1)
        return G.synthesis(x, noise_mode=noise_mode).clamp(-1, 1)
    return render


def _edit_metrics(G, ws, normal, h: float, j: int, H, h_base, base, render, *, identity: bool, realism: bool,
                  central: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One boundary's edit ``ws + h * normal`` on every layer: its metrics ``{name: [N]}`` (CPU) and images."""
    edited_ws = ws + h * normal  # every layer  [N, num_ws, w_dim]
    img = render(edited_ws)
    if central:
        delta = ((H(img).float()[:, j] - H(render(ws - h * normal)).float()[:, j]) / 2).cpu()
    else:
        delta = (H(img).float()[:, j] - h_base[:, j]).cpu()
    values = {"change": delta / h if h != 0 else torch.zeros_like(delta),
              "w_distance": w_distance(edited_ws, G).cpu()}
    if identity:
        values["identity"] = identity_similarity(base, img, align=generator_crop(G)).cpu()
    if realism:
        values["face_conf"] = detect_faces(img, device=device_of(G)).conf
    return values, img


__all__ = ["ALIGNS", "EDITABILITY_METRICS", "IDENTITY_CHIP_TEMPLATE", "PERCEPTUAL_LAYERS", "PerceptualDistance",
           "ReferenceDistance", "checked_distance", "default_perceptual", "dlib_features", "distortion",
           "editability", "generator_crop", "identity_embedding", "identity_similarity", "mse", "perceptual_distance",
           "resolve_perceptual", "world_chips", "world_to_chip"]


# ---------------------------------------------------------------------------------------------
# Judges and baselines for claims (issue #15)

IDENTITY_JUDGE_NOTE = ("judged by the dlib ResNet port (facelab.nets.identity), the only identity network "
                       "available offline: methods trained through it are not independently judged")


@dataclasses.dataclass(frozen=True)
class JudgedIdentity:
    """Per-face identity similarities ``values`` [N] (float32, CPU) and a ``note`` naming the judge
    (print it next to the number)."""

    values: torch.Tensor
    judge: str
    note: str

    def __len__(self) -> int:
        return len(self.values)


def judged_identity(a: torch.Tensor, b: torch.Tensor, *, net: nn.Module | None = None,
                    align: str = "world") -> JudgedIdentity:
    """:func:`identity_similarity` [N] of paired faces a, b [N, 3, H, W] in [-1, 1], without
    gradients, with the judge's name and the caveat that no independent identity network exists here."""
    with torch.no_grad():
        sim = identity_similarity(a, b, net=net, align=align).detach().float().cpu()
    judge = "dlib ResNet port" if net is None else type(net).__name__
    return JudgedIdentity(sim, judge, IDENTITY_JUDGE_NOTE if net is None else
                          f"judged by {judge}; the dlib port is the only identity network available offline")


PIXELS_PER_BATCH = 2 ** 24  # faces rendered at once for a judgement: 4096 of 64 px, 16 of 1024 px
# The largest side any judge needs: the teacher labelers and H shrink faces further, and dlib's 150 px chips
# cover about 0.6 of the world crop's side. Faces kept only to be judged can be rendered at this size.
JUDGE_SIZE = 256


def different_people_identity(G, n: int = 32, *, seed: int = 0, psi: float = 1.0, device=None,
                              net: nn.Module | None = None, noise_mode: str = "const",
                              align: str | None = None) -> JudgedIdentity:
    """Identity similarity [n] between ``n`` pairs of DIFFERENT generated people.

    Faces ``2i`` and ``2i + 1`` of ``2n`` faces drawn from z with ``torch.Generator`` seed ``seed``
    (truncation ``psi``) are compared with :func:`judged_identity` (same judge and chips as
    :func:`identity_similarity`): the baseline an "edits keep identity" claim must clear. Runs on
    ``device`` (default: G's), on a copy of G if it lives elsewhere: the caller's G stays where it is;
    in batches of about 16 million pixels (4096 faces of 64 px, 16 of 1024 px), so that a thousand
    pairs of a large generator's faces never sit in memory at once. ``align``: the chips' crop (default:
    the generator's, :func:`generator_crop`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 pairs, got {n}")
    device = device_of(G) if device is None else get_device(device)
    G = on_device(G, device)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n, G.z_dim, generator=gen)  # on the CPU: the same people on every device
    pairs = max(1, PIXELS_PER_BATCH // (2 * getattr(G, "img_resolution", 64) ** 2))
    judged = []
    with torch.no_grad():
        for chunk in z.split(2 * pairs):
            ws = G.mapping(chunk.to(device), truncation_psi=psi, update_w_avg=False)
            images = G.synthesis(ws, noise_mode=noise_mode).clamp(-1, 1)
            judged.append(judged_identity(images[0::2], images[1::2], net=net, align=align or generator_crop(G)))
    return dataclasses.replace(judged[0], values=torch.cat([j.values for j in judged]))


def judged_attribute_change(before: torch.Tensor, after: torch.Tensor, attributes=None, *,
                            device=None, mirror: bool = True) -> dict[str, torch.Tensor]:
    """Per-face change ``after - before`` of each attribute, judged by the TEACHER labelers.

    ``before``, ``after``: paired faces [N, 3, H, W] in [-1, 1]. Labels come from
    :func:`facelab.nets.attributes.label_images` (MTCNN + the teacher models, not H, so methods
    trained through H are judged independently). Returns ``{name: float32 [N]}`` with NaN where
    either face has no detected face; ``attributes`` as in ``label_images`` (default: all).
    """
    from .nets.attributes import label_images
    _check_pair(before, after, "judged_attribute_change")
    n = before.shape[0]
    scores = label_images(torch.cat([before, after]), attributes=attributes, batch_size=max(1, 2 * n),
                          device=device, mirror=mirror, progress=False)
    found = (scores["face_conf"][:n] > 0) & (scores["face_conf"][n:] > 0)
    nan = torch.tensor(float("nan"))
    return {k: torch.where(found, v[n:] - v[:n], nan) for k, v in scores.items() if k != "face_conf"}


__all__ += ["IDENTITY_JUDGE_NOTE", "JUDGE_SIZE", "JudgedIdentity", "PIXELS_PER_BATCH", "different_people_identity",
            "judged_attribute_change", "judged_identity"]
