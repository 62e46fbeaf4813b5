"""InterFaceGAN: semantic boundaries in a GAN's latent space, and editing along them.

Shen, Gu, Tang, Zhou. "Interpreting the Latent Space of GANs for Semantic Face Editing", CVPR 2020;
Shen, Yang, Tang, Zhou. "InterFaceGAN: Interpreting the Disentangled Face Representation Learned by
GANs", TPAMI 2020. Reference code: github.com/genforce/interfacegan (``utils/manipulator.py``).

The recipe, one function per step::

    lat    = sample_latents(G, 100_000, space="w")           # z [N, z_dim] and w [N, w_dim]
    scores = label_latents(G, lat, labeler=H)                 # {"age": [N], "male": [N], ...}
    age    = train_boundary(lat.codes("w"), scores["age"], attribute="age", space="w")
    w2     = edit(w, age, 2.0)                                # w + 2 n_age: older
    cond   = project_boundary(age, male)                      # older without changing gender

A boundary is a hyperplane ``{x : n . x + b = 0}`` with unit normal ``n`` (pointing towards *more*
of the attribute) and offset ``b``, found by a linear SVM that separates the latents whose faces
score highest from those that score lowest. ``n . x + b`` is the signed distance of ``x`` to it.

Latent shapes: Z ``[N, z_dim]``, W ``[N, w_dim]``, W+ ``[N, num_ws, w_dim]``. A W+ boundary lives in
the flattened space (``dim = num_ws * w_dim``); a W boundary applied to W+ latents moves every layer
(or the ``layers=`` you pick: style-range editing). Images are ``[N, 3, R, R]`` in [-1, 1].

Where we depart from the reference code (each is noted where it happens): the boundary keeps the
SVM's offset, so :func:`edit_to_distance` measures the distance to the fitted hyperplane rather than
to a parallel one through the origin; :func:`project_boundary` works for any number of conditions
by least squares and refuses a primal that lies in the conditions' span instead of dividing by ~0;
:func:`train_boundary` drops samples with a NaN score (the reference ranks them as positives);
:func:`train_boundary` reports the accuracy on *all* samples and the correlation between the signed
distance and the score besides the reference's validation and "remaining" accuracies. One addition:
:func:`activation_pattern` turns a boundary into the direction its latents vary along, which in W
edits far more per std than the normal (the reference edits along the normal only).
"""
from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import claims as C
from .imaging import resize
from .utils import check_finite, device_of
from .worlds import register_reader

SPACES = ("z", "w", "w+")
BOUNDARIES_FORMAT = "facelab.boundaries/1"
SKLEARN_HINT = "pip install scikit-learn==1.9.1"
MIN_PER_SIDE = 5  # fewest positives (and negatives) train_boundary accepts
_BLOCK = 1000  # latents are drawn in seeded blocks of this many rows (see sample_latents)

__all__ = [
    "Boundary", "BoundaryReport", "Latents", "Rescore", "activation_pattern", "attribute_correlation",
    "attribute_slope", "boundary_cosines", "check_space",
    "edit", "edit_grid", "edit_to_distance", "label_latents", "load_boundaries", "project_boundary", "render",
    "rescore", "resolve_labeler", "sample_latents", "save_boundaries", "signed_distance", "train_boundary",
    "world_patterns",
]


def check_space(space: str) -> str:
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    return space


# ---------------------------------------------------------------------------------------------
# Sampling, rendering and labelling


@dataclass
class Latents:
    """A seeded sample of latents, on the CPU.

    z: [N, z_dim] ~ N(0, I). w: [N, w_dim], the truncated W code ``w_avg + psi (mapping(z) - w_avg)``.
    ws: [N, num_ws, w_dim] only when sampled with ``space="w+"`` (style-mixed rows differ per layer),
    else None: W is broadcast to every layer. Row ``i`` is sample ``start + i`` of the stream ``seed``.
    """

    z: torch.Tensor
    w: torch.Tensor
    ws: torch.Tensor | None = None
    psi: float = 1.0
    seed: int = 0
    start: int = 0
    mixing: float = 0.0

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, idx) -> "Latents":
        return replace(self, z=self.z[idx], w=self.w[idx], ws=None if self.ws is None else self.ws[idx])

    def codes(self, space: str) -> torch.Tensor:
        """The codes boundaries are fitted in: Z [N, z_dim], W [N, w_dim] or flattened W+ [N, num_ws * w_dim]."""
        if check_space(space) == "z":
            return self.z
        if space == "w":
            return self.w
        if self.ws is None:
            raise ValueError("these latents hold no per-layer W+ codes; "
                             "sample them with sample_latents(..., space='w+')")
        return self.ws.flatten(1)

    def synthesis_input(self) -> torch.Tensor:
        """What ``G.synthesis`` takes: W+ [N, num_ws, w_dim] when present, else W [N, w_dim]."""
        return self.ws if self.ws is not None else self.w


@torch.no_grad()
def sample_latents(G, n: int, *, space: str = "w", psi: float = 1.0, seed: int = 0, start: int = 0,
                   mixing: float = 0.0, batch_size: int = 1000) -> Latents:
    """Draw ``n`` latents and map them to W (truncation ``psi`` on every layer).

    z is drawn on the CPU in blocks of 1000 rows, block ``k`` from ``torch.Generator`` seed
    ``seed * 1_000_003 + k``: row ``i`` is the same face for every ``n``, ``start`` and device, so a
    big sample can be made chunk by chunk (``start=0, 5000, ...``). ``space="w+"`` also keeps the
    per-layer codes ``ws``; with ``mixing`` > 0 that fraction of rows is style-mixed (layers from a
    random crossover on come from a second latent, as in StyleGAN training), so that W+ codes span
    more than the W subspace. The mapping runs on ``G``'s device; the result lies on the CPU.
    """
    check_space(space)
    if n < 1 or start < 0:
        raise ValueError(f"need n >= 1 and start >= 0, got n={n}, start={start}")
    if not 0.0 <= mixing <= 1.0:
        raise ValueError(f"mixing is a probability in [0, 1], got {mixing}")
    if mixing and space != "w+":
        raise ValueError("mixing only makes sense for space='w+' (W and Z codes are one vector per face)")
    first, last = start // _BLOCK, (start + n - 1) // _BLOCK
    zs, z2s, cuts, mixed = [], [], [], []
    for k in range(first, last + 1):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        zs.append(torch.randn(_BLOCK, G.z_dim, generator=gen))
        if mixing:
            mix_gen = torch.Generator().manual_seed(-(seed * 1_000_003 + k) - 1)
            z2s.append(torch.randn(_BLOCK, G.z_dim, generator=mix_gen))
            cuts.append(torch.randint(1, G.num_ws, (_BLOCK,), generator=mix_gen))
            mixed.append(torch.rand(_BLOCK, generator=mix_gen) < mixing)
    lo = start - first * _BLOCK
    z = torch.cat(zs)[lo: lo + n]  # [N, z_dim]
    device = device_of(G)

    def to_w(zz: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in zz.split(batch_size):
            w = G.mapping(chunk.to(device), truncation_psi=1.0, update_w_avg=False)[:, 0]  # [B, w_dim]
            out.append(G.mapping.w_avg.lerp(w, psi).float().cpu() if psi != 1 else w.float().cpu())
        return torch.cat(out)

    w = to_w(z)  # [N, w_dim]
    ws = None
    if space == "w+":
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)  # [N, num_ws, w_dim]
        if mixing:
            w2 = to_w(torch.cat(z2s)[lo: lo + n])
            cut = torch.cat(cuts)[lo: lo + n]
            use = torch.cat(mixed)[lo: lo + n]
            layer = torch.arange(G.num_ws)
            take2 = use[:, None] & (layer[None, :] >= cut[:, None])  # [N, num_ws]
            ws = torch.where(take2[..., None], w2[:, None, :], ws)
    return Latents(z=z, w=w, ws=ws, psi=float(psi), seed=seed, start=start, mixing=float(mixing))


@torch.no_grad()
def render(G, latents: Latents | torch.Tensor, *, batch_size: int = 64, noise_mode: str = "const",
           clamp: bool = True, size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Render latents (a :class:`Latents`, W [N, w_dim] or W+ [N, num_ws, w_dim]) to images [N, 3, R, R].

    Runs on ``G``'s device in batches; returns CPU float32 images in [-1, 1] (clamped unless
    ``clamp=False``). ``noise_mode="const"`` makes the images deterministic. ``size``: each batch is
    shrunk (area) to at most ``size`` px before it leaves the device, e.g.
    :data:`facelab.metrics.JUDGE_SIZE` for faces that only judges will see: a thousand faces of a
    1024 px generator are 12.6 GB at full size, 0.8 GB at 256 px.
    """
    from tqdm.auto import tqdm

    x = latents.synthesis_input() if isinstance(latents, Latents) else latents
    device = device_of(G)
    out = []
    for chunk in tqdm(x.split(batch_size), desc="rendering", unit="batch", disable=not progress):
        img = G.synthesis(chunk.to(device), noise_mode=noise_mode).float()
        if size is not None and img.shape[-1] > size:
            img = resize(img, size)
        out.append((img.clamp(-1, 1) if clamp else img).cpu())
    return torch.cat(out)


def resolve_labeler(labeler=None):
    """``None`` or ``"H"``: the shipped attribute regressor; ``"teacher"``: the teacher models of
    :mod:`facelab.nets.attributes`; anything callable is returned unchanged."""
    if labeler is None or labeler == "H":
        from .hub import load_regressor
        return load_regressor()
    if labeler == "teacher":
        from .nets.attributes import label_images

        def teacher(images: torch.Tensor) -> dict[str, torch.Tensor]:
            return label_images(images, batch_size=max(1, len(images)), progress=False)
        teacher.names = None
        return teacher
    if isinstance(labeler, str):
        raise ValueError(f"unknown labeler {labeler!r}; pass 'H', 'teacher' or a callable images -> scores")
    if not callable(labeler):
        raise TypeError("labeler must be callable (images [N, 3, H, W] in [-1, 1] -> scores), "
                        f"got {type(labeler).__name__}")
    return labeler


def _as_scores(out, labeler, n: int) -> dict[str, torch.Tensor]:
    """A labeler's answer as ``{name: float32 CPU [N]}``."""
    if isinstance(out, Mapping):
        scores = {str(k): torch.as_tensor(v) for k, v in out.items()}
    else:
        out = torch.as_tensor(out)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1:
            scores = {str(getattr(labeler, "name", "score")): out}
        elif out.ndim == 2:
            names = getattr(labeler, "names", None) or [str(j) for j in range(out.shape[1])]
            if len(names) != out.shape[1]:
                raise ValueError(f"labeler returned {out.shape[1]} columns but names {list(names)}")
            scores = {str(a): out[:, j] for j, a in enumerate(names)}
        else:
            raise ValueError(f"a labeler must return [N], [N, K] or a dict of [N], got shape {list(out.shape)}")
    for k, v in scores.items():
        if v.shape != (n,):
            raise ValueError(f"labeler score {k!r} has shape {list(v.shape)}, expected [{n}]")
    return {k: v.detach().float().cpu() for k, v in scores.items()}


@torch.no_grad()
def label_latents(G, latents: Latents | torch.Tensor, *, labeler=None, batch_size: int = 64,
                  noise_mode: str = "const", progress: bool = True) -> dict[str, torch.Tensor]:
    """Render latents batch by batch and score the faces: ``{attribute: float32 [N]}`` on the CPU.

    ``labeler`` maps images [B, 3, R, R] in [-1, 1] to scores: a module with ``.names`` returning
    [B, K] (like H, :class:`facelab.nets.regressor.AttributeRegressor`), a callable returning a dict
    ``{name: [B]}`` or a single score [B] (named by its ``.name`` attribute, else ``"score"``), or
    ``"H"`` / ``"teacher"`` (see :func:`resolve_labeler`; default H). Images go to the labeler's
    device. Only one batch of images is held at a time. NaN scores (teacher: no face found) are kept.
    """
    from tqdm.auto import tqdm

    labeler = resolve_labeler(labeler)
    x = latents.synthesis_input() if isinstance(latents, Latents) else latents
    lab_device = device_of(labeler) if isinstance(labeler, nn.Module) else None
    chunks: dict[str, list[torch.Tensor]] = {}
    for chunk in tqdm(x.split(batch_size), desc="labelling", unit="batch", disable=not progress):
        images = render(G, chunk, batch_size=batch_size, noise_mode=noise_mode)  # [B, 3, R, R]
        if lab_device is not None:
            images = images.to(lab_device)
        scores = _as_scores(labeler(images), labeler, len(chunk))
        if chunks and scores.keys() != chunks.keys():
            raise ValueError(f"labeler returned {sorted(scores)} for one batch and {sorted(chunks)} for another")
        for k, v in scores.items():
            chunks.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in chunks.items()}


# ---------------------------------------------------------------------------------------------
# Boundaries


@dataclass(frozen=True)
class BoundaryReport:
    """How a boundary was fitted and how well it separates (accuracies in [0, 1], NaN when undefined)."""

    n_samples: int           # valid samples (after dropping NaN / invalid scores)
    n_invalid: int           # samples dropped for a NaN or ``invalid_value`` score
    n_chosen: int            # per side: the n_chosen highest scores are positives, the lowest negatives
    n_train: int             # per side, fitted
    n_val: int               # per side, held out
    train_accuracy: float
    val_accuracy: float      # held-out extremes
    remaining_accuracy: float  # the reference's: samples not chosen, labelled score >= threshold
    all_accuracy: float      # every valid sample, same labels
    threshold: float         # the score that splits the remaining samples
    score_correlation: float  # Pearson r between signed distance and score, all valid samples
    distance_mean: float     # mean and std of the signed distance over all valid samples:
    distance_std: float      # distance_std is the natural unit for edit steps
    ratio: float
    split: float
    C: float
    seed: int


@dataclass(eq=False)
class Boundary:
    """A hyperplane ``{x : normal . x + offset = 0}`` in one latent space.

    normal: unit vector [D], float32, pointing towards more of ``attribute``. ``offset``: in latent
    units, so ``normal . x + offset`` is the signed distance of ``x`` (> 0: the attribute's side).
    ``space`` is "z", "w" or "w+" (D = num_ws * w_dim, flattened). ``conditions`` names the
    attributes it was made orthogonal to (:func:`project_boundary`). ``report``: how it was fitted
    (None for projected boundaries). ``meta``: provenance (generator, labeler, ...).
    """

    normal: torch.Tensor
    offset: float = 0.0
    attribute: str = ""
    space: str = "w"
    conditions: tuple[str, ...] = ()
    report: BoundaryReport | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = torch.as_tensor(self.normal).detach().float().cpu()
        if n.ndim != 1 or n.numel() == 0 or not torch.isfinite(n).all():
            raise ValueError(f"normal must be a finite vector [D], got shape {list(n.shape)}")
        norm = n.norm()
        if not math.isclose(float(norm), 1.0, rel_tol=1e-3):
            raise ValueError(f"normal must have unit norm, got {float(norm):.4g}; divide it by its norm")
        self.normal = n if abs(float(norm) - 1) < 1e-6 else n / norm  # exact round trips through files
        self.offset = float(self.offset)
        self.conditions = tuple(self.conditions)
        check_space(self.space)

    @property
    def dim(self) -> int:
        return self.normal.numel()

    @property
    def name(self) -> str:
        """``"age"``, or ``"age|male,smile"`` when made orthogonal to conditions."""
        return self.attribute + ("|" + ",".join(self.conditions) if self.conditions else "")

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance of latents ``x`` (see :func:`signed_distance`)."""
        return signed_distance(x, self)

    def to_dict(self) -> dict:
        """Plain tensors and Python types only: loads with ``torch.load(weights_only=True)``."""
        return {"normal": self.normal.clone(), "offset": self.offset, "attribute": self.attribute,
                "space": self.space, "conditions": list(self.conditions),
                "report": None if self.report is None else asdict(self.report),
                "meta": json.loads(json.dumps(self.meta, default=str))}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Boundary":
        report = d.get("report")
        if report is not None:
            known = {f.name for f in fields(BoundaryReport)}
            report = BoundaryReport(**{k: v for k, v in report.items() if k in known})
        return cls(normal=d["normal"], offset=d.get("offset", 0.0), attribute=d.get("attribute", ""),
                   space=d.get("space", "w"), conditions=tuple(d.get("conditions", ())), report=report,
                   meta=dict(d.get("meta", {})))

    def __repr__(self) -> str:
        acc = "" if self.report is None else f", val_accuracy={self.report.val_accuracy:.3f}"
        return f"Boundary({self.name!r}, space={self.space!r}, dim={self.dim}, offset={self.offset:.4g}{acc})"


def _as_numpy_codes(codes) -> np.ndarray:
    x = codes.detach().cpu().double().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes, np.float64)
    if x.ndim == 3:
        x = x.reshape(len(x), -1)  # W+ [N, num_ws, w_dim] -> [N, num_ws * w_dim]
    if x.ndim != 2:
        raise ValueError(f"latents must be [N, D] (or W+ [N, num_ws, w_dim]), got shape {list(x.shape)}")
    return x


def train_boundary(latents, scores, *, ratio: float = 0.02, split: float = 0.7,
                   invalid_value: float | None = None, threshold: str | float = "midpoint", C: float = 1.0,
                   seed: int = 0, attribute: str = "", space: str | None = None) -> Boundary:
    """Fit the hyperplane separating the highest- from the lowest-scoring latents (a linear SVM).

    latents: codes [N, D] (Z, W, or W+ [N, num_ws, w_dim], flattened), or a :class:`Latents` with
    ``space`` naming which codes to use. scores: [N], one attribute score per latent.

    As in the reference ``train_boundary``: rows with a score equal to ``invalid_value`` are dropped
    (and, our addition, rows with a NaN score, which the reference would rank among its positives);
    the ``k`` highest scores are positives and the ``k`` lowest negatives, ``k = int(ratio * N)`` if
    ``ratio <= 1`` else ``int(ratio)`` (at most N // 2); each
    side is shuffled (``seed``) and split ``split`` : ``1 - split`` into training and validation; an
    SVM with a linear kernel (``sklearn.svm.SVC(kernel="linear", C=C)``) is fitted. The remaining
    samples are labelled positive where ``score >= threshold``: ``"midpoint"`` (the reference's:
    halfway between the highest and lowest score), ``"median"``, or a number.

    Returns a :class:`Boundary` whose unit normal points towards higher scores, with the SVM's
    offset (rescaled to unit normal) and a :class:`BoundaryReport`.
    """
    try:
        from sklearn.svm import SVC
    except ImportError as e:  # pragma: no cover - scikit-learn is a pinned dependency
        raise ImportError(f"train_boundary needs scikit-learn: {SKLEARN_HINT}") from e

    x, s, space, n_invalid = _codes_and_scores(latents, scores, space, split=split, ratio=ratio,
                                               invalid_value=invalid_value)
    n = len(s)
    k = min(int(n * ratio) if ratio <= 1 else int(ratio), n // 2)
    n_train = int(k * split)
    if k < MIN_PER_SIDE or n_train < 1:
        raise ValueError(f"too few samples: {n} valid scores ({n_invalid} dropped as NaN/invalid) and "
                         f"ratio={ratio} give {k} per side, need >= {MIN_PER_SIDE} with >= 1 for training; "
                         "sample more latents or raise ratio")
    if not np.isfinite(x).all() or not np.isfinite(s).all():
        raise ValueError("latents and scores must be finite (NaN scores are dropped, inf ones are not)")

    # The k highest scores are positives, the k lowest negatives; each side shuffled, then split.
    order = np.argsort(-s, kind="stable")  # highest first
    rng = np.random.default_rng(seed)
    pos = order[:k][rng.permutation(k)]
    neg = order[n - k:][rng.permutation(k)]
    train_idx = np.concatenate([pos[:n_train], neg[:n_train]])
    val_idx = np.concatenate([pos[n_train:], neg[n_train:]])
    y_train = np.r_[np.ones(n_train), np.zeros(n_train)]
    y_val = np.r_[np.ones(k - n_train), np.zeros(k - n_train)]

    clf = SVC(kernel="linear", C=C).fit(x[train_idx], y_train)
    coef = clf.coef_.reshape(-1)  # decision > 0 <=> class 1 (the high scores)
    norm = float(np.linalg.norm(coef))
    if norm == 0:
        raise ValueError("the SVM found no direction (all weights zero): are the latents constant?")
    normal, offset = coef / norm, float(clf.intercept_[0]) / norm
    dist = x @ normal + offset  # [N] signed distances

    thr = _threshold(s, threshold)
    y_all = s >= thr
    rest = order[k: n - k]

    def acc(idx, y) -> float:
        return float(((dist[idx] > 0) == y.astype(bool)).mean()) if len(idx) else float("nan")

    sd = float(dist.std())
    r = float(np.corrcoef(dist, s)[0, 1]) if sd > 0 and s.std() > 0 else float("nan")
    report = BoundaryReport(
        n_samples=n, n_invalid=n_invalid, n_chosen=k, n_train=n_train, n_val=k - n_train,
        train_accuracy=acc(train_idx, y_train), val_accuracy=acc(val_idx, y_val),
        remaining_accuracy=acc(rest, y_all[rest]), all_accuracy=acc(np.arange(n), y_all),
        threshold=float(thr), score_correlation=r, distance_mean=float(dist.mean()), distance_std=sd,
        ratio=float(ratio), split=float(split), C=float(C), seed=int(seed))
    return Boundary(normal=torch.from_numpy(normal).float(), offset=offset, attribute=attribute, space=space,
                    report=report)


def _codes_and_scores(latents, scores, space, *, split: float, ratio: float, invalid_value):
    """train_boundary's argument checks: (codes [N, D] float64, scores [N] float64, space, n dropped),
    rows with a NaN (or ``invalid_value``) score dropped."""
    if isinstance(latents, Latents):
        if space is None:
            raise ValueError("pass space='z', 'w' or 'w+' to say which codes of the Latents to use")
        latents = latents.codes(space)
    was_plus = isinstance(latents, (torch.Tensor, np.ndarray)) and np.ndim(latents) == 3
    x = _as_numpy_codes(latents)
    space = check_space(space or ("w+" if was_plus else "w"))
    s = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1 or len(s) != len(x):
        raise ValueError(f"scores must be [N] with N = {len(x)} (one per latent), got shape {list(s.shape)}")
    if not 0 < split <= 1:
        raise ValueError(f"split is the training fraction in (0, 1], got {split}")
    if ratio <= 0:
        raise ValueError(f"ratio must be positive (a fraction <= 1 or a count > 1), got {ratio}")
    keep = ~np.isnan(s)
    if invalid_value is not None:
        keep &= s != invalid_value
    return x[keep], s[keep], space, int((~keep).sum())


def _threshold(s: np.ndarray, threshold) -> float:
    """The score above which the samples not chosen count as positive (see :func:`train_boundary`)."""
    if threshold == "midpoint":
        return (s.max() + s.min()) / 2
    if threshold == "median":
        return float(np.median(s))
    if isinstance(threshold, (int, float)):
        return float(threshold)
    raise ValueError(f"threshold must be 'midpoint', 'median' or a number, got {threshold!r}")


def _unit(v, what: str) -> tuple[torch.Tensor, float]:
    """(unit normal float64 [D], offset) of a Boundary or a vector ([D] or [1, D]; offset 0)."""
    if isinstance(v, Boundary):
        return v.normal.double(), v.offset
    if isinstance(v, (str, dict)):  # edit(ws, "age", 3) or edit(ws, B, 3): a name or all of them, not one
        got, key = (repr(v), v) if isinstance(v, str) else (f"with keys {list(v)[:4]}", next(iter(v), "age"))
        raise TypeError(f"{what} must be a Boundary or a vector, got the {type(v).__name__} {got}; pass one "
                        f"boundary, e.g. B[{key!r}] with B = world.boundaries('w')")
    t = torch.as_tensor(v).detach().cpu().double()
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1:
        raise ValueError(f"{what} must be a Boundary or a vector [D] / [1, D], got shape {list(t.shape)}")
    norm = t.norm()
    if norm == 0 or not torch.isfinite(norm):
        raise ValueError(f"{what} must be a non-zero finite vector")
    return t / norm, 0.0


def activation_pattern(boundary: Boundary, codes, scores=None) -> Boundary:
    """The direction in which the latents *vary with* a boundary's signed distance: its activation
    pattern ``p = S n / |S n|``, ``S`` the covariance of ``codes`` (Haufe et al., "On the
    interpretation of weight vectors of linear models in multivariate neuroimaging", NeuroImage 2014).

    An SVM's normal ``n`` is a *filter*: the direction to read the attribute off a latent, which leans
    away from the attribute's own direction wherever that cancels variation unrelated to it. The
    pattern is the covariance between the latents and the signed distance, the direction in which
    faces of different distances actually differ: for codes ``x = a p + e`` (``e`` independent of the
    attribute ``a``) the pattern of the least-squares filter that reads ``a`` is exactly ``p`` (Haufe's
    forward model), and an SVM's comes close; in an isotropic space such as Z it is the normal itself.
    Edit along it by steps of its own distance std, as along a normal. The reference code edits along
    the normal; world64's card measures both (in its W a step along the normal leaves the codes'
    distribution much further and moves the attribute much less). A pattern is made of correlations:
    it also carries what co-varies with the attribute, so at equal change of the attribute the normal
    is the cleaner edit (notebook 04 measures both).

    codes: latents of the boundary's space ([N, D], or W+ [N, num_ws, w_dim]) sampled as the
    boundary's were. scores: optional [N] attribute scores of those latents, for the report's
    correlation. Returns a :class:`Boundary` (same attribute and space) whose hyperplane passes
    through the point of the SVM's hyperplane nearest the codes' mean and, when the boundary has a
    report, a report whose distance mean, std and score correlation are measured along ``p`` over
    ``codes`` and whose accuracies are NaN (the pattern is not a classifier); a boundary without a
    report gives a pattern without one. ``meta["direction"]`` is ``"pattern"``.
    """
    if not isinstance(boundary, Boundary):
        raise TypeError(f"activation_pattern needs a Boundary, got {type(boundary).__name__}")
    if boundary.conditions:
        raise ValueError(f"{boundary.name!r} is already projected off its conditions; take the pattern of the "
                         "unprojected boundary first, then project_boundary() it off the conditions' normals")
    x = _as_numpy_codes(codes)
    if x.shape[1] != boundary.dim:
        raise ValueError(f"codes have dimension {x.shape[1]}, the boundary {boundary.dim}; pass latents of "
                         f"its space ({boundary.space!r})")
    if len(x) < 2:
        raise ValueError(f"need at least 2 codes to measure a covariance, got {len(x)}")
    n = boundary.normal.double().numpy()
    mu = x.mean(0)
    xc = x - mu
    sn = xc.T @ (xc @ n) / (len(x) - 1)  # S n without forming S
    norm = float(np.linalg.norm(sn))
    if norm == 0 or not np.isfinite(norm):
        raise ValueError("the codes do not vary along the boundary's normal (are they all the same latent?)")
    pattern = sn / norm
    x0 = mu - (float(mu @ n) + boundary.offset) * n  # nearest point of the SVM's hyperplane to the mean
    offset = -float(pattern @ x0)
    dist = x @ pattern + offset
    r = float("nan")
    if scores is not None:
        s = torch.as_tensor(scores).detach().cpu().double().numpy()
        if s.shape != (len(x),):
            raise ValueError(f"scores must be [N] with N = {len(x)} (one per code), got shape {list(s.shape)}")
        ok = np.isfinite(s)
        r = float(np.corrcoef(dist[ok], s[ok])[0, 1]) if ok.sum() > 2 else r
    report = None
    if boundary.report is not None:
        nan = float("nan")
        report = replace(boundary.report, train_accuracy=nan, val_accuracy=nan, remaining_accuracy=nan,
                         all_accuracy=nan, score_correlation=r, distance_mean=float(dist.mean()),
                         distance_std=float(dist.std()))
    return replace(boundary, normal=torch.from_numpy(pattern).float(), offset=offset, report=report,
                   meta={**boundary.meta, "direction": "pattern", "pattern_codes": len(x)})


_WORLD_PATTERNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # world -> {(space, n, seed): patterns}


def world_patterns(world, space: str = "w", *, n: int = 10_000, seed: int = 0) -> dict[str, Boundary]:
    """``{name: Boundary}``: each of a :class:`~facelab.worlds.World`'s boundaries in ``space`` (``"w"``
    or ``"z"``) along its activation pattern (:func:`activation_pattern`), the direction the world's
    faces vary along, measured over ``n`` latents of the seeded stream ``seed`` (0: the one the
    shipped boundaries were fitted on). Boundaries already projected off others (``conditions``) are
    left out: project a pattern instead. Computed once per world and ``(space, n, seed)``; each call
    returns a new dict."""
    if space not in ("w", "z"):
        raise ValueError(f"patterns are taken in 'w' or 'z', got {space!r}; for W+ call "
                         "activation_pattern with the style-mixed codes the boundary saw")
    cache = _WORLD_PATTERNS.setdefault(world, {})
    if (space, n, seed) not in cache:
        codes = sample_latents(world.G, n, space="w", seed=seed).codes(space)
        cache[space, n, seed] = {a: activation_pattern(b, codes) for a, b in world.boundaries(space).items()
                                 if not b.conditions}
    return dict(cache[space, n, seed])


def project_boundary(primal, *conditions):
    """Conditional manipulation: the direction of ``primal`` with every condition's component removed.

    Returns the unit vector ``n' = r / |r|`` with ``r = n - sum_i beta_i c_i`` orthogonal to every
    condition normal ``c_i`` (moving along ``n'`` leaves each condition's signed distance unchanged).
    ``beta`` solves the normal equations ``(C C^T) beta = C n``: closed forms for one condition
    (``beta = n . c``) and two (the paper's), least squares for three or more (or for two nearly
    parallel conditions, where the closed form would divide by ~0). Vectors are normalised first.

    Accepts Boundaries or vectors ([D] or [1, D]) and returns the primal's type: a vector of the
    primal's shape, dtype and device, or a :class:`Boundary` with ``conditions`` set and offset
    ``(b - sum_i beta_i b_i) / |r|`` (vector conditions count as hyperplanes through the origin), so
    that its signed distance is ``(d(x) - sum_i beta_i d_i(x)) / |r|``: the primal's distance with
    the conditions' share removed. Raises ValueError if the primal lies in the conditions' span.
    With no conditions the primal is returned as given, as in the reference code (a Boundary's normal
    is unit already; a vector is not normalised).
    """
    n, b = _unit(primal, "primal")
    if not conditions:
        return primal
    cs = [_unit(c, f"condition {i}") for i, c in enumerate(conditions)]
    for i, (c, _) in enumerate(cs):
        if c.numel() != n.numel():
            raise ValueError(f"condition {i} has dimension {c.numel()}, primal has {n.numel()}")
    if isinstance(primal, Boundary):
        spaces = {c.space for c in conditions if isinstance(c, Boundary)} - {primal.space}
        if spaces:
            raise ValueError(f"primal is a {primal.space!r} boundary but conditions are in {sorted(spaces)}")
    C = torch.stack([c for c, _ in cs])  # [k, D]
    offs = torch.tensor([o for _, o in cs], dtype=torch.float64)
    p = C @ n  # [k] n . c_i
    if len(cs) == 1:
        beta = p
    elif len(cs) == 2 and 1 - float(C[0] @ C[1]) ** 2 > 1e-6:
        g = C[0] @ C[1]
        det = 1 - g ** 2
        beta = torch.stack([(p[0] - p[1] * g) / det, (p[1] - p[0] * g) / det])
    else:
        beta = torch.linalg.lstsq(C.T, n[:, None], driver="gelsd").solution[:, 0]  # min |C^T beta - n|
    r = n - beta @ C  # [D]
    rn = float(r.norm())
    if rn < 1e-6:
        raise ValueError("the primal direction lies in the span of the conditions: nothing is left to edit "
                         "once they are held fixed; drop a condition")
    new = r / rn
    if isinstance(primal, Boundary):
        names = tuple(c.attribute if isinstance(c, Boundary) else f"c{i}" for i, c in enumerate(conditions))
        return replace(primal, normal=new.float(), offset=(b - float(beta @ offs)) / rn,
                       conditions=primal.conditions + names, report=None, meta=dict(primal.meta))
    t = torch.as_tensor(primal)
    return new.to(dtype=t.dtype if t.is_floating_point() else torch.float32, device=t.device).reshape(t.shape)


# ---------------------------------------------------------------------------------------------
# Editing


def _normal_like(boundary, x: torch.Tensor, layers) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """The normal shaped to broadcast against latents x, its offset, and a layer mask.

    W/Z latents [N, D]: (n [D], b, None). W+ latents with a W+ boundary: (n [L, D], b, None).
    W+ latents with a W/Z boundary: (n [D], b, mask [L, 1]) with ones on the ``layers`` to edit.
    """
    if isinstance(boundary, Boundary):
        n, b = boundary.normal, boundary.offset
    else:
        n, b = _unit(boundary, "boundary")[0].float(), 0.0
    n = n.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    if x.ndim == 2:
        if n.numel() != x.shape[1]:
            raise ValueError(f"latents [N, {x.shape[1]}] do not match a boundary of dimension {n.numel()}")
        if layers is not None:
            raise ValueError("layers= selects W+ layers; these latents are W/Z [N, D]")
        return n, b, None
    if x.ndim != 3:
        raise ValueError(f"latents must be [N, D] or W+ [N, num_ws, w_dim], got shape {list(x.shape)}")
    if isinstance(boundary, Boundary) and boundary.space == "z":  # Z codes are [N, D]: only .space tells them apart
        raise ValueError(f"boundary {boundary.attribute or 'given'!r} lives in Z, and these latents are W+ (a space "
                         "of W); use the 'w' boundaries (world.boundaries('w')), or Z codes [N, z_dim]")
    L, D = x.shape[1:]
    if n.numel() == L * D and n.numel() != D:
        if layers is not None:
            raise ValueError("layers= applies to W boundaries on W+ latents; this boundary is already a W+ one")
        return n.reshape(L, D), b, None
    if n.numel() != D:
        raise ValueError(f"W+ latents [N, {L}, {D}] need a boundary of dimension {D} (W) or {L * D} (W+), "
                         f"got {n.numel()}")
    mask = torch.zeros(L, 1, device=x.device, dtype=n.dtype)
    idx = list(range(L)) if layers is None else [int(i) for i in layers]
    if not idx or any(not -L <= i < L for i in idx):
        raise ValueError(f"layers must be a non-empty list of indices in [-{L}, {L}), got {idx}")
    mask[idx] = 1
    return n, b, mask


_LATENTS_FIX = "edit finite latents (a NaN usually comes from a diverged projection or an earlier bad edit)"


def _per_sample(v, x: torch.Tensor, what: str = "step/distance") -> torch.Tensor:
    """A finite scalar or per-sample [N] value in x's dtype, shaped to broadcast over latents x."""
    if isinstance(v, str):
        raise TypeError(f"{what} must be a number or one per latent [N], got the str {v!r}; pass e.g. 3.0")
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    check_finite(v, what, fix=f"pass a finite {what}")
    if v.ndim == 0:
        return v
    if v.shape != (x.shape[0],):
        raise ValueError(f"step/distance must be a number or one per latent [{x.shape[0]}], got {list(v.shape)}")
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def signed_distance(x: torch.Tensor, boundary) -> torch.Tensor:
    """``n . x + b`` for latents x: [N] for W/Z [N, D] or W+ latents with a W+ boundary; [N, num_ws]
    (each layer's distance) for W+ latents with a W boundary. A plain vector has offset 0."""
    n, b, mask = _normal_like(boundary, x, None)
    if mask is not None:
        return x @ n + b  # [N, L]
    return (x * n).flatten(1).sum(1) + b  # [N]


def edit(x: torch.Tensor, boundary, step, *, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Move latents along the boundary's unit normal: ``x + step * n``.

    x: W/Z [N, D] or W+ [N, num_ws, w_dim]; step: a number or one per latent [N], in latent units
    (``boundary.report.distance_std`` is a natural unit). A W boundary on W+ latents moves the
    ``layers`` given (default: all), a W+ boundary moves the whole code. The signed distance changes
    by exactly ``step`` (per edited layer).
    """
    check_finite(x, "the latents", fix=_LATENTS_FIX)
    n, _, mask = _normal_like(boundary, x, layers)
    move = n if mask is None else mask * n  # [D], [L, D]
    return x + _per_sample(step, x, "step") * move


def edit_to_distance(x: torch.Tensor, boundary, distance, *, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Move latents along the normal until their signed distance is ``distance`` (number or [N]).

    ``x + (distance - (n . x + b)) n``: ``distance = 0`` puts them on the hyperplane. With a W
    boundary on W+ latents each edited layer is set to the distance separately, the others are
    untouched. (The reference ``linear_interpolate`` measures from the parallel hyperplane through
    the origin, and on W+ codes it only adds its distances to every layer, as :func:`edit` does.)
    """
    check_finite(x, "the latents", fix=_LATENTS_FIX)
    n, b, mask = _normal_like(boundary, x, layers)
    target = _per_sample(distance, x, "distance")
    if mask is not None:
        d = (x @ n + b)[..., None]  # [N, L, 1]
        return x + mask * (target - d) * n
    d = _per_sample((x * n).flatten(1).sum(1) + b, x)
    return x + (target - d) * n


@torch.no_grad()
def attribute_slope(G, boundary, H, *, attribute: str | None = None, n: int = 64, seed: int = 0,
                    psi: float = 1.0) -> float:
    """How much H's ``attribute`` (default: the boundary's) moves per latent unit along the normal.

    Measured on ``n`` random faces (seeds from ``seed``, truncation ``psi``), each edited by one
    ``report.distance_std`` (or 1 latent unit for a boundary without a report) on every W+ layer:
    the mean change of H's output divided by the step, in the attribute's units (years,
    probabilities, ...) per latent unit. ``change / slope`` is then the InterFaceGAN step that asks
    for ``change`` -- on average over the world; a single face may move more or less.
    """
    if boundary.space != "w":
        raise ValueError(f"attribute_slope measures W boundaries, got a {boundary.space!r} one; load them with "
                         "space='w'")
    attribute = attribute or boundary.attribute
    step = float(getattr(boundary.report, "distance_std", 1.0) or 1.0)
    ws = sample_latents(G, n, space="w", psi=psi, seed=seed).w.to(device_of(G))  # [n, w_dim]
    j, at = H.index(attribute), device_of(H)  # render returns CPU images; H may sit on the GPU
    before = H(render(G, ws).to(at))[:, j]
    after = H(render(G, edit(ws, boundary, step)).to(at))[:, j]
    return float((after - before).mean()) / step


@torch.no_grad()
def edit_grid(G, x: torch.Tensor, boundary, steps: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3), *,
              mode: str = "step", layers: Sequence[int] | None = None, batch_size: int = 64,
              noise_mode: str = "const") -> torch.Tensor:
    """Images of each latent edited by each step: [N * len(steps), 3, R, R] in [-1, 1], face by face.

    x: W [N, w_dim] or W+ [N, num_ws, w_dim]. ``mode="step"`` uses :func:`edit` (``x + s n``),
    ``mode="distance"`` :func:`edit_to_distance` (signed distance ``s``). Show them with
    ``fl.make_grid(images, nrow=len(steps))`` or ``fl.viz.show(images, nrow=len(steps))``.
    """
    if mode not in ("step", "distance"):
        raise ValueError(f"mode must be 'step' or 'distance', got {mode!r}")
    fn = edit if mode == "step" else edit_to_distance
    edited = torch.stack([fn(x, boundary, s, layers=layers) for s in steps], dim=1)  # [N, S, ...]
    return render(G, edited.flatten(0, 1), batch_size=batch_size, noise_mode=noise_mode)


# ---------------------------------------------------------------------------------------------
# Analysis


def _named_boundaries(boundaries) -> tuple[list[str], list]:
    if isinstance(boundaries, (Boundary, torch.Tensor)):
        boundaries = [boundaries]
    if isinstance(boundaries, Mapping):
        return [str(k) for k in boundaries], list(boundaries.values())
    items = list(boundaries)
    return [b.name if isinstance(b, Boundary) else str(i) for i, b in enumerate(items)], items


def boundary_cosines(boundaries) -> torch.Tensor:
    """Cosine similarity between boundary normals: [K, K] float32, in the order given.

    boundaries: a dict ``{name: Boundary or vector}`` or a sequence. The paper compares this with
    :func:`attribute_correlation`: correlated attributes have nearly parallel boundaries.
    """
    _, items = _named_boundaries(boundaries)
    normals = [_unit(b, f"boundary {i}")[0] for i, b in enumerate(items)]
    if len({v.numel() for v in normals}) > 1:
        raise ValueError(f"boundaries of different dimensions {[v.numel() for v in normals]}: "
                         "compare one space at a time")
    N = torch.stack(normals)  # [K, D]
    return (N @ N.T).float()


def attribute_correlation(scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Pearson correlation between attribute scores: [K, K] float32 in the dict's order.

    Each pair uses the rows where both scores are finite (NaN-safe); NaN where fewer than 3 such
    rows remain or a score is constant on them.
    """
    names = list(scores)
    S = torch.stack([torch.as_tensor(scores[a]).double().cpu().reshape(-1) for a in names])  # [K, N]
    ok = torch.isfinite(S)
    out = torch.full((len(names), len(names)), float("nan"), dtype=torch.float64)
    for i in range(len(names)):
        for j in range(i, len(names)):
            m = ok[i] & ok[j]
            if m.sum() < 3:
                continue
            a, b = S[i, m] - S[i, m].mean(), S[j, m] - S[j, m].mean()
            den = (a.norm() * b.norm()).item()
            if den > 0:
                out[i, j] = out[j, i] = (a @ b).item() / den
    return out.float()


@dataclass
class Rescore:
    """Mean change of each attribute per unit step along each boundary.

    change: [n_boundaries, n_attributes]; ``change[i, j]`` is in attribute j's units per latent unit,
    whatever the step the difference was taken over (``step``; with ``step="std"`` each boundary's
    ``distance_std``: multiply by it for the change per std). per_sample: [n_boundaries, N,
    n_attributes], the same per face (NaN where the labeler found no face); ``change`` is its NaN-mean
    over faces. identity: [n_boundaries] mean identity similarity between the faces and their
    ``+step`` edits, when an identity function was given, and per_sample_identity [n_boundaries, N].
    """

    change: torch.Tensor
    boundaries: list[str]
    attributes: list[str]
    step: list[float]
    unit: str
    identity: torch.Tensor | None = None
    per_sample: torch.Tensor | None = None
    per_sample_identity: torch.Tensor | None = None

    def to_markdown(self, digits: int = 3) -> str:
        """A markdown table, boundaries as rows, ``digits`` significant digits."""
        head = ["boundary \\ attribute"] + self.attributes + (["identity"] if self.identity is not None else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, b in enumerate(self.boundaries):
            row = [b.replace("|", "\\|")] + [f"{v:+.{digits}g}" for v in self.change[i].tolist()]  # "yaw|roll"
            if self.identity is not None:
                row.append(f"{float(self.identity[i]):.{digits}g}")
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)


@torch.no_grad()
def rescore(G, x: torch.Tensor, boundaries, labeler=None, *, step: float | str = 1.0,
            layers: Sequence[int] | None = None, identity: Callable | None = None, batch_size: int = 64,
            noise_mode: str = "const", space: str = "w", progress: bool = False) -> Rescore:
    """Re-score edited faces: how much does moving along each boundary change every attribute?

    For each boundary, the latents ``x`` (W [N, w_dim] or W+ [N, num_ws, w_dim]) are edited by
    ``+step`` and ``-step`` and the labeler's scores compared: the central difference
    ``mean_i (s(x_i + h n) - s(x_i - h n)) / 2h`` (NaN-safe). ``step`` is in latent units, or ``"std"``
    for each boundary's ``report.distance_std``. On the diagonal (a boundary's own attribute) this
    should be clearly positive; off it, small values mean a disentangled edit (the paper's
    re-scoring analysis). ``identity(a, b) -> [N]`` (images in [-1, 1]) optionally measures how
    much of the face's identity survives the ``+step`` edit. ``space="z"``: ``x`` are Z codes [N, z_dim]
    and the boundaries live in Z; each edited code is mapped to W (ψ = 1) before rendering.
    """
    labeler = resolve_labeler(labeler)
    if check_space(space) == "z":
        to_w = lambda codes: G.mapping(codes.to(device_of(G)), truncation_psi=1.0)  # noqa: E731  [N, num_ws, w_dim]
    else:
        to_w = lambda codes: codes  # noqa: E731
    names, items = _named_boundaries(boundaries)
    for name, b in zip(names, items):  # Z and W codes have the same size in many worlds: only .space tells
        if isinstance(b, Boundary) and (b.space == "z") != (space == "z"):
            raise ValueError(f"boundary {name!r} lives in {b.space!r} but rescore was given space={space!r}; "
                             f"pass space={b.space!r} with {b.space!r} codes, or load the {space!r} boundaries")
    base = render(G, to_w(x), batch_size=batch_size, noise_mode=noise_mode) if identity is not None else None
    rows, steps, ids, attrs = [], [], [], None
    for b in items:
        if step == "std":
            if not isinstance(b, Boundary) or b.report is None:
                raise ValueError("step='std' needs fitted Boundaries (with a report); give a number instead")
            h = b.report.distance_std
        elif isinstance(step, (int, float)) and step > 0:
            h = float(step)
        else:
            raise ValueError(f"step must be a positive number or 'std', got {step!r}")
        plus = label_latents(G, to_w(edit(x, b, h, layers=layers)), labeler=labeler, batch_size=batch_size,
                             noise_mode=noise_mode, progress=progress)
        minus = label_latents(G, to_w(edit(x, b, -h, layers=layers)), labeler=labeler, batch_size=batch_size,
                              noise_mode=noise_mode, progress=progress)
        attrs = attrs or list(plus)
        rows.append(torch.stack([(plus[a] - minus[a]).double() / (2 * h) for a in attrs], 1))  # [N, n_attributes]
        steps.append(h)
        if identity is not None:
            edited = render(G, to_w(edit(x, b, h, layers=layers)), batch_size=batch_size, noise_mode=noise_mode)
            ids.append(torch.as_tensor(identity(base, edited)).float().cpu())
    per_sample = torch.stack(rows).float()  # [n_boundaries, N, n_attributes]
    return Rescore(change=per_sample.nanmean(1), boundaries=names, attributes=attrs, step=steps,
                   unit="per latent unit",
                   identity=torch.stack(ids).nanmean(1) if ids else None, per_sample=per_sample,
                   per_sample_identity=torch.stack(ids) if ids else None)


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_boundaries(path: str | Path, boundaries, *, meta: dict | None = None) -> Path:
    """Save boundaries (a dict or sequence of :class:`Boundary`) atomically as a weights_only torch file.

    Format: ``{"format": "facelab.boundaries/1", "boundaries": [Boundary.to_dict(), ...], "meta": {...}}``.
    Each (space, name) pair may occur once.
    """
    from .hub import atomic_torch_save

    items = list(boundaries.values()) if isinstance(boundaries, Mapping) else list(boundaries)
    seen = set()
    for b in items:
        if not isinstance(b, Boundary):
            raise TypeError(f"save_boundaries stores Boundary objects, got {type(b).__name__}")
        if (b.space, b.name) in seen:
            raise ValueError(f"two boundaries named {b.name!r} in space {b.space!r}")
        seen.add((b.space, b.name))
    meta = json.loads(json.dumps(meta or {}, default=str))
    return atomic_torch_save({"format": BOUNDARIES_FORMAT, "boundaries": [b.to_dict() for b in items],
                              "meta": meta}, path)


def load_boundaries(name_or_path: str | Path = "world64", *, space: str | None = "w") -> dict[str, Boundary]:
    """Boundaries from a file saved by :func:`save_boundaries`, or shipped ones by generator name.

    ``"world64"`` loads the registered ``boundaries_world64`` (``facelab/weights/boundaries_world64.pt``,
    sha256-checked). Returns ``{name: Boundary}`` for one ``space`` (``"z"``, ``"w"``, ``"w+"``), or,
    with ``space=None``, every boundary keyed ``"space/name"`` (e.g. ``"w/age"``). Loading never
    unpickles code (``weights_only=True``).
    """
    from .hub import REGISTRY, is_path, load_file, weights_path, world_artifact

    if is_path(name_or_path):
        path = Path(name_or_path).expanduser()
    else:
        key = str(world_artifact("boundaries", name_or_path))  # "world64" -> "boundaries_world64"
        if key not in REGISTRY or REGISTRY[key].kind != "boundaries":
            raise KeyError(f"no boundaries named {name_or_path!r} are registered (looked for "
                           f"'boundaries_{name_or_path}' in facelab/weights/manifest.json); compute them with "
                           "`python -m facelab.train.boundaries --out my_boundaries.pt` and load that file")
        path = weights_path(key)
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != BOUNDARIES_FORMAT:
        raise ValueError(f"{path} is not a facelab boundaries file (expected format {BOUNDARIES_FORMAT!r}); "
                         "write one with facelab.interpret.save_boundaries")
    items = [Boundary.from_dict(d) for d in ckpt["boundaries"]]
    if space is None:
        return {f"{b.space}/{b.name}": b for b in items}
    check_space(space)
    out = {b.name: b for b in items if b.space == space}
    if not out:
        have = sorted({b.space for b in items})
        raise ValueError(f"{path} holds no {space!r} boundaries (spaces: {have}); pass space= one of those or None")
    return out


# ---------------------------------------------------------------------------------------------
# Unsupervised directions as a contrast (issue #15)
#
# SeFa: Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021: the
# directions d that the style affine layers A of the chosen synthesis layers amplify most,
# max |A d|^2 s.t. |d| = 1, are the top eigenvectors of A^T A (reference: github.com/genforce/sefa).
# GANSpace: Härkönen, Hertzmann, Lehtinen, Paris, "GANSpace: Discovering Interpretable GAN
# Controls", NeurIPS 2020: the principal components of sampled w.


@dataclass(frozen=True)
class Directions:
    """Unit directions in W, ``vectors`` [K, w_dim] float32 (rows orthonormal), sorted by ``values``
    [K] (descending: SeFa eigenvalues or GANSpace variances); ``method`` names how they were found."""

    vectors: torch.Tensor
    values: torch.Tensor
    method: str
    explained: torch.Tensor | None = None  # GANSpace: fraction of the total variance [K]


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Eigenvectors are defined up to sign: make each row's largest-magnitude entry positive."""
    idx = vectors.abs().argmax(dim=1)
    sign = vectors.gather(1, idx[:, None]).sign()
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


def sefa_directions(G, *, layers: Sequence[int] | None = None, k: int = 5) -> Directions:
    """SeFa directions: the top-``k`` eigenvectors of ``A^T A`` [w_dim, w_dim].

    ``A`` stacks the style affine weights [C_i, w_dim] of the synthesis conv layers ``layers``
    (indices into ``G.synthesis.layers()``, i.e. ws indices of the conv layers; default: all),
    each output row scaled to unit norm as in the reference code. The reference's "all" also takes
    the last toRGB layer's style weights, which tilts the directions a little. Returns :class:`Directions`
    with unit vectors in W and their eigenvalues, largest first; signs are fixed so that each
    vector's largest entry is positive (the sign of an eigenvector means nothing).
    """
    convs = G.synthesis.layers()
    chosen = list(range(len(convs))) if layers is None else [int(i) for i in layers]
    bad = [i for i in chosen if not 0 <= i < len(convs)]
    if bad or not chosen:
        raise ValueError(f"layers must be a non-empty list of conv layer indices in [0, {len(convs)}), got {layers}")
    A = torch.cat([convs[i].affine.weight.detach().cpu().double() for i in chosen])  # [sum C_i, w_dim]
    A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if not 1 <= k <= A.shape[1]:
        raise ValueError(f"k must be in [1, {A.shape[1]}] (w_dim), got {k}")
    values, vectors = torch.linalg.eigh(A.T @ A)  # ascending
    order = values.argsort(descending=True)[:k]
    return Directions(_fix_signs(vectors[:, order].T).float(), values[order].float(), "sefa")


def ganspace_directions(G, *, n: int = 10_000, k: int = 5, seed: int = 0, psi: float = 1.0) -> Directions:
    """GANSpace directions: the top-``k`` principal components of ``n`` sampled w [n, w_dim].

    Returns :class:`Directions` with unit vectors in W, their variances ``values`` (w units²) and
    ``explained`` (fraction of the total variance), largest first; signs fixed as in :func:`sefa_directions`.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 samples for a PCA, got {n}")
    w = sample_latents(G, n, seed=seed, psi=psi).w.double()
    if not 1 <= k <= min(n, w.shape[1]):
        raise ValueError(f"k must be in [1, {min(n, w.shape[1])}], got {k}")
    _, s, vh = torch.linalg.svd(w - w.mean(0), full_matrices=False)
    var = s**2 / (n - 1)
    return Directions(_fix_signs(vh[:k]).float(), var[:k].float(), "ganspace", (var[:k] / var.sum()).float())


def _direction_rows(directions) -> torch.Tensor:
    v = directions.vectors if isinstance(directions, Directions) else torch.as_tensor(directions)
    v = v.detach().cpu().double()
    v = v[None] if v.ndim == 1 else v
    if v.ndim != 2:
        raise ValueError(f"directions must be Directions or vectors [K, D], got shape {list(v.shape)}")
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def direction_cosines(directions, boundaries) -> torch.Tensor:
    """|cos| [K, B] float32 between directions (:class:`Directions` or [K, D]) and the boundary
    normals (a dict ``{name: Boundary or vector}`` or a sequence, in that order): 1 = the same axis."""
    d = _direction_rows(directions)
    _, items = _named_boundaries(boundaries)
    normals = torch.stack([_unit(b, f"boundary {i}")[0] for i, b in enumerate(items)])  # [B, D]
    if normals.shape[1] != d.shape[1]:
        raise ValueError(f"directions have {d.shape[1]} dimensions but boundaries {normals.shape[1]}: "
                         "compare directions in W with W boundaries")
    return (d @ normals.T).abs().float()


@dataclass(frozen=True)
class EditEffect:
    """Mean change of one attribute per std-unit step along a direction, its 95% CI (Student's t,
    :func:`facelab.claims.mean_ci`) and ``n``, the faces with a finite score on both sides."""

    mean: float
    lo: float
    hi: float
    n: int


def what_directions_edit(G, directions, *, n: int = 32, step: float = 1.0, labeler="teacher",
                         seed: int = 0, psi: float = 1.0, batch_size: int = 32) -> list[dict[str, EditEffect]]:
    """What each direction edits: for direction ``d`` (unit, in W) with std ``s`` of ``w . d`` over
    the ``n`` sampled faces, each face is rendered at ``w ± step s d`` and labelled; the per-face
    central difference ``(score+ - score-) / (2 step)`` is the change per std unit.

    ``labeler``: ``"teacher"`` (default: the teacher models, independent of H), ``"H"`` or a
    callable (see :func:`resolve_labeler`). Returns one ``{attribute: EditEffect}`` per direction;
    faces where either side has no score (NaN, e.g. no face detected) are dropped from that mean.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 faces for a confidence interval, got {n}")
    if not step > 0:
        raise ValueError(f"step must be > 0 (std units), got {step}")
    d = _direction_rows(directions).float()
    labeler = resolve_labeler(labeler)
    w = sample_latents(G, n, seed=seed, psi=psi).w  # [n, w_dim]
    if d.shape[1] != w.shape[1]:
        raise ValueError(f"directions have {d.shape[1]} dimensions but w_dim is {w.shape[1]}")
    out = []
    for v in d:
        h = step * float((w @ v).std())
        plus = label_latents(G, w + h * v, labeler=labeler, batch_size=batch_size, progress=False)
        minus = label_latents(G, w - h * v, labeler=labeler, batch_size=batch_size, progress=False)
        effects = {}
        for name in plus:
            diff = (plus[name] - minus[name]).double() / (2 * step)
            diff = diff[torch.isfinite(diff)].cpu().numpy()
            if len(diff) > 1:
                est = C.mean_ci(diff)
                effects[name] = EditEffect(est.value, est.low, est.high, est.n)
            else:
                effects[name] = EditEffect(float(diff.mean()) if len(diff) else math.nan, math.nan, math.nan, len(diff))
        out.append(effects)
    return out


__all__ += ["Directions", "EditEffect", "direction_cosines", "ganspace_directions", "sefa_directions",
            "what_directions_edit"]

register_reader("boundaries", load_boundaries)  # a World reads its boundaries file with this
