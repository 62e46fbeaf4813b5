"""The Latent-to-Latent mapper: a network that edits several face attributes in one forward pass.

Khodadadeh, Ghadar, Motiian, Lin, Bölöni, Kalarot: "Latent to Latent: A Learned Mapper for Identity
Preserving Editing of Multiple Face Attributes in StyleGAN-generated Images", WACV 2022. No official
code was released; this follows the paper's text.

InterFaceGAN edits by adding a fixed direction to every latent. The mapper instead *learns* the edit:
a fully connected network ``f(w, Δa) -> w'`` takes a W+ latent and the wanted change of each
attribute, and returns the edited latent. It is trained without paired data, through a frozen
attribute regressor H and a frozen face-identity network, with five losses (each a weight in
:class:`MapperConfig`)::

    attribute       MSE( H(G(w')), a_target )        does the edit happen? (and the others stay put)
    cycle           L1( f(f(w, Δa), -Δa), w )        the edit can be undone: no information lost
    identity        L1( f(w, 0), w )                 asking for nothing changes nothing
    neighbourhood   L2( w' - w )                     stay near the start: fewer side effects
    face identity   1 - cos( id(G(w)), id(G(w')) )   the person stays the same

Shapes: ``ws`` [N, num_ws, w_dim] (W+; a W latent [N, w_dim] is broadcast to every layer), ``delta``
[N, K] in *standardised* attribute units (one unit = one standard deviation of the attribute over
the world, as H sees it); :meth:`LatentMapper.edit` takes natural units (``age=+10`` years).

**Attribute correction** (the paper's step that keeps single-attribute targets plausible). Asking
for "+10 years, nothing else" is not what happens in the data: older faces in our world are also
(say) more often male. The requested change ``Δa`` on the *named* attributes is completed on the
other attributes by their regression on the named ones, fitted on the world's labels:
``Δa_other = B Δa_named`` with ``B[i, j] = corr(i, j)``, the conditional mean of a Gaussian fitted
to the standardised labels given one named attribute (several named attributes add their
single-attribute slopes, ignoring the named ones' own correlation, which ``Σ_on Σ_nn⁻¹`` would
account for), keeping only entries whose correlation is at least ``correction_min_corr`` in
magnitude (weaker ones are noise and are set to zero: the attribute is asked to stay put).
Targets are then clipped to the range seen in the data. The matrix is computed by
:func:`correction_matrix` and stored with the mapper.

    m = fl.mapper.load_mapper()                          # shipped for world64
    ws_edit = m.edit(ws, age=+10, smile=+0.3)            # one forward pass
    fl.mapper.edit(ws, age=+10)                          # same, with the shipped mapper
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .latents import as_wplus
from .utils import Config, annealed_lr, check_finite, device_key
from .worlds import register_reader

__all__ = ["LatentMapper", "MapperConfig", "correction_matrix", "edit", "load_mapper", "save_mapper"]

MAPPER_FORMAT = "facelab.mapper/1"
EDITABLE = ("age", "male", "smile", "yaw", "roll", "mouth_width")  # H's attributes except face_conf


@dataclass(frozen=True)
class MapperConfig(Config):
    """Architecture, data and loss weights of the mapper (paper's choices where it gives them); frozen."""

    attributes: tuple[str, ...] = EDITABLE
    depth: int = 2                      # hidden layers, 1-4 (paper: tanh, width of the input)
    residual: bool = True               # w' = w + f(...): see the module docstring of train.mapper
    # losses
    attribute_weight: float = 1.0
    cycle_weight: float = 1.0
    identity_weight: float = 1.0
    neighbourhood_weight: float = 0.5
    face_identity_weight: float = 0.5
    # training data: how edits are drawn
    max_change: float = 2.0             # |Δa| up to this many standard deviations
    max_attributes: int = 3             # 1..this many attributes changed at once
    correction_min_corr: float = 0.2
    # optimisation
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-4
    lr_anneal_steps: int = 0            # the last this many steps: lr falls by a half cosine to 0
    psi: float = 1.0                    # truncation of the training latents
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "attributes", tuple(self.attributes))
        if not 1 <= self.depth <= 4:
            raise ValueError(f"depth must be 1-4 hidden layers (the paper's range), got {self.depth}")
        if not 1 <= self.max_attributes <= len(self.attributes):
            raise ValueError(f"max_attributes must be in 1..{len(self.attributes)}, got {self.max_attributes}")
        if not 0 <= self.lr_anneal_steps <= self.steps:
            raise ValueError(f"lr_anneal_steps must be in 0..steps ({self.steps}), got {self.lr_anneal_steps}")

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): ``lr``, then a half cosine to 0 over the last
        ``lr_anneal_steps`` steps (:func:`facelab.utils.annealed_lr`)."""
        return annealed_lr(step, self.lr, self.steps, self.lr_anneal_steps)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["attributes"] = list(self.attributes)
        return d


class LatentMapper(nn.Module):
    """f(ws, Δa) -> ws': fully connected over the flattened W+ latent and the change vector.

    Every hidden layer has the width of the input (``num_ws * w_dim + K``) and a tanh non-linearity
    (the paper found ReLU loses information); the output layer is linear. Latents are standardised
    with the world's W statistics (``w_mean``, ``w_std``) on the way in and out, so the tanh layers
    see unit-scale inputs.
    """

    def __init__(self, num_ws: int, w_dim: int, config: MapperConfig | None = None, *,
                 w_mean: torch.Tensor | None = None, w_std: torch.Tensor | None = None,
                 attr_mean: torch.Tensor | None = None, attr_std: torch.Tensor | None = None,
                 attr_min: torch.Tensor | None = None, attr_max: torch.Tensor | None = None,
                 correction: torch.Tensor | None = None):
        super().__init__()
        config = MapperConfig() if config is None else config
        self.config, self.num_ws, self.w_dim = config, num_ws, w_dim
        k = len(config.attributes)
        width = num_ws * w_dim + k
        layers: list[nn.Module] = []
        for _ in range(config.depth):
            layers += [nn.Linear(width, width), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, num_ws * w_dim)
        if config.residual:  # start as the identity map: f(w, Δa) = w
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def buf(name, value, default):
            self.register_buffer(name, (default if value is None else value).float().clone())

        buf("w_mean", w_mean, torch.zeros(w_dim))
        buf("w_std", w_std, torch.ones(w_dim))
        buf("attr_mean", attr_mean, torch.zeros(k))
        buf("attr_std", attr_std, torch.ones(k))
        buf("attr_min", attr_min, torch.full((k,), -torch.inf))
        buf("attr_max", attr_max, torch.full((k,), torch.inf))
        buf("correction", correction, torch.eye(k))
        self.meta: dict = {}

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.config.attributes

    def _check(self, ws: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        ws = as_wplus(ws, self, what="the mapper's ws")
        if delta.shape != (ws.shape[0], len(self.attributes)):
            raise ValueError(f"delta must be [N, {len(self.attributes)}] (one column per {list(self.attributes)}), "
                             f"got {tuple(delta.shape)}")
        return ws

    def forward(self, ws: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or W [N, w_dim]), delta [N, K] standardised -> ws' [N, num_ws, w_dim]."""
        ws = self._check(ws, delta)
        x = ((ws - self.w_mean) / self.w_std).flatten(1)  # [N, num_ws * w_dim]
        h = self.body(torch.cat([x, delta.to(x.dtype)], 1))  # [N, num_ws * w_dim + K]
        y = self.out(h)
        y = x + y if self.config.residual else y
        return y.view(-1, self.num_ws, self.w_dim) * self.w_std + self.w_mean

    # --- attribute units ---------------------------------------------------------------------

    def delta_from_changes(self, n: int, changes: dict[str, float], *, device=None) -> torch.Tensor:
        """Standardised delta [n, K] from natural-unit changes, e.g. ``{"age": 10, "smile": 0.3}``."""
        unknown = sorted(set(changes) - set(self.attributes))
        if unknown:
            raise KeyError(f"the mapper cannot edit {unknown}; it edits {list(self.attributes)}")
        delta = torch.zeros(n, len(self.attributes), device=device or self.attr_std.device)
        for j, a in enumerate(self.attributes):
            if a in changes:
                if isinstance(changes[a], str):
                    raise TypeError(f"the {a} change must be a number or one per latent [N], got the str "
                                    f"{changes[a]!r}; pass e.g. {a}=3.0")
                change = torch.as_tensor(changes[a], dtype=torch.float32, device=delta.device)
                check_finite(change, f"the {a} change", fix=f"pass a finite {a}=...")
                delta[:, j] = change / self.attr_std[j]
        return delta

    @torch.no_grad()
    def edit(self, ws: torch.Tensor, *, stacklevel: int = 2, **changes: float) -> torch.Tensor:
        """Edited W+ latents for natural-unit changes: ``m.edit(ws, age=+10, smile=+0.3)``.

        Each change is a float (same for every latent) or a tensor [N]. A change beyond the
        ``max_change`` std the mapper was trained on is made, with a warning: there the mapper
        extrapolates (``stacklevel`` is the warnings module's, the caller's line by default).
        """
        check_finite(ws, "ws", fix="edit finite latents (a NaN usually comes from a diverged projection)")
        ws = ws.to(self.w_mean.device)
        delta = self.delta_from_changes(ws.shape[0], changes)
        self._warn_beyond_training(delta, stacklevel=stacklevel + 1)
        return self(ws, delta)

    def _warn_beyond_training(self, delta: torch.Tensor, *, stacklevel: int) -> None:
        bound = self.config.max_change
        for j, a in enumerate(self.attributes):
            largest = delta[:, j][delta[:, j].abs().argmax()] if len(delta) else delta.new_zeros(())
            if abs(largest) > bound * (1 + 1e-6):
                std = float(self.attr_std[j])
                warnings.warn(f"{a} {float(largest) * std:+.3g} is {abs(largest):.1f} std of the world's {a}; the "
                              f"mapper was trained on changes within +-{bound:g} std (+-{bound * std:.3g}) and "
                              "extrapolates beyond them", stacklevel=stacklevel + 1)

    # --- targets -----------------------------------------------------------------------------

    def corrected(self, delta: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
        """Complete a change on the ``named`` attributes ([N, K] bool) by the correction matrix.

        Named entries keep their requested value; every other attribute moves by
        ``sum_j correction[i, j] * delta_j`` over the named j (standardised units).
        """
        implied = (delta * named) @ self.correction.T  # [N, K]
        return torch.where(named, delta, implied)

    def target(self, attrs: torch.Tensor, delta: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
        """Target attributes (natural units) [N, K]: current + corrected change, clipped to the data's range."""
        t = attrs + self.corrected(delta, named) * self.attr_std
        return torch.maximum(torch.minimum(t, self.attr_max), self.attr_min)


def correction_matrix(labels: torch.Tensor, *, min_corr: float = 0.2) -> torch.Tensor:
    """Regression slopes B [K, K] between standardised attributes: B[i, j] = corr(i, j) if |corr| >= min_corr.

    For one named attribute j, the conditional mean of a Gaussian gives ``E[a_i | a_j] = corr(i, j) a_j``
    in standardised units, so ``B[:, j]`` is the change the data implies for every attribute when
    ``a_j`` moves by one standard deviation. (For several named attributes at once we apply the
    single-attribute slopes additively, ignoring their mutual correlation: an approximation we
    state rather than hide.) The diagonal is 1; weak correlations are zeroed.
    """
    ok = ~torch.isnan(labels).any(1)
    x = labels[ok].double()
    x = (x - x.mean(0)) / x.std(0)
    c = (x.T @ x) / (x.shape[0] - 1)  # [K, K] correlation
    c = torch.where(c.abs() >= min_corr, c, torch.zeros_like(c))
    c.fill_diagonal_(1.0)
    return c.float()


def save_mapper(m: LatentMapper, path, *, weight_dtype: torch.dtype = torch.float32) -> None:
    """Save ``m``; ``weight_dtype=torch.float16`` stores its weight matrices at half the size.

    The matrices are the bulk of the file (three of about 1286 x 1286 for world64); loading casts
    them back to float32 for computing, so a half-precision file only rounds each weight once
    (relative error below 5e-4). Biases and the statistics buffers are always float32 (so not
    :func:`facelab.hub.half_weights`, which would round the 2-D ``correction`` buffer too).
    """
    from .hub import atomic_torch_save

    state = {k: (v.to(weight_dtype) if v.ndim == 2 and k.endswith("weight") else v).detach().cpu()
             for k, v in m.state_dict().items()}
    atomic_torch_save({"format": MAPPER_FORMAT, "config": m.config.to_dict(), "num_ws": m.num_ws,
                       "w_dim": m.w_dim, "state_dict": state, "meta": m.meta}, path)


def load_mapper(name_or_path: str | Path = "world64", *, device=None) -> LatentMapper:
    """A world's shipped mapper by its name (``"world64"``, or the registry name ``"mapper_world64"``) or
    one saved by ``save_mapper``; eval mode, frozen."""
    from .hub import load_checkpoint, load_state, world_artifact
    from .utils import get_device

    fix = "train one with: python -m facelab.train.mapper"
    path, ckpt = load_checkpoint(world_artifact("mapper", name_or_path), fmt=MAPPER_FORMAT, what="a facelab mapper",
                                 fix=fix, keys=("config", "num_ws", "w_dim", "state_dict"))
    m = LatentMapper(ckpt["num_ws"], ckpt["w_dim"], MapperConfig.from_dict(ckpt["config"]))
    load_state(m, ckpt["state_dict"], path, fix=f"the file was altered or damaged; {fix}")
    m.meta = ckpt.get("meta", {})
    return m.eval().requires_grad_(False).to(get_device(device))


@functools.lru_cache(maxsize=2)
def _shipped(device: str) -> LatentMapper:
    return load_mapper(device=device)


def edit(ws: torch.Tensor, **changes: float) -> torch.Tensor:
    """Edit W+ latents with the shipped world64 mapper: ``fl.mapper.edit(ws, age=+10, smile=+0.3)``."""
    return _shipped(device_key(ws.device)).edit(ws, stacklevel=3, **changes)


register_reader("mapper", load_mapper)  # a World reads its mapper file with this
