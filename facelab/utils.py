"""Small helpers shared by every module: the device rule, finiteness checks, configs, seeding, showing source.

**The device rule.** Everything that loads or builds networks (``load_generator``, ``load_identity``,
``sample_teacher``, the MTCNN labelers, ``PerceptualDistance``, ``align_face``, ...) takes
``device=None``, which means :func:`get_device`: ``FACELAB_DEVICE``, else CUDA, else MPS, else the CPU.
Algorithms handed a network (``project(G, ...)``, ``tune(G, ...)``, ``editability(G, ...)``) run
where that network lives (:func:`device_of`) unless ``device=`` names another place, where they work
on a copy and leave the caller's network alone. Random latents are drawn on the CPU and moved, so a
seed means the same faces on every device; the per-layer noise of ``noise_mode="random"`` is drawn on
the device, from its own generator, so the finest detail of a seeded render differs between devices.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import random
import secrets
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

DEVICE_ENV = "FACELAB_DEVICE"


class DeviceUnavailable(RuntimeError):
    """A device torch knows but this machine lacks (``cuda`` without a GPU): bad input, said in one line."""


DEVICE_TYPES = ("cpu", "cuda", "mps", "meta")  # meta: shapes only, for tests of where tensors go


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on.

    An explicit ``device`` wins; then the ``FACELAB_DEVICE`` environment variable (e.g. ``cpu``,
    ``cuda``, ``cuda:1``, ``mps``); then CUDA, then Apple MPS, then the CPU.
    """
    choice = device if device is not None else os.environ.get(DEVICE_ENV) or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check, unset = ((f" (check the {DEVICE_ENV} environment variable)", f" or unset {DEVICE_ENV}") if device is None
                    else ("", ""))  # only a device that came from the environment is the variable's fault
    try:
        dev = torch.device(choice)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {choice!r}; use cpu, cuda, cuda:N or mps{check}") from e
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device {choice!r}: facelab runs on cpu, cuda, cuda:N or mps{check}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {choice!r} requested but CUDA is not available; use cpu{unset}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"device {choice!r} requested but MPS is not available; use cpu{unset}")
    return dev


@contextlib.contextmanager
def atomic_file(path, suffix: str = ".tmp"):
    """A new binary file beside ``path``, renamed onto it if the block succeeds, deleted if it fails.

    Its name is unique (concurrent writers never share one), and it is created like any file, mode
    0666 minus the umask (``mkstemp``'s 0600 would make a shared cache unreadable to others).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def device_key(device: str | torch.device) -> str:
    """``device`` as a cache key, with its index: ``"cuda"`` and ``"cuda:0"`` (what a tensor reports) are one
    device, and a per-device cache keyed by both would load its network twice."""
    d = torch.device(device)
    if d.type == "cpu" or d.index is not None:
        return str(d)
    current = torch.cuda.current_device() if d.type == "cuda" and torch.cuda.is_available() else 0
    return f"{d.type}:{current}"


def device_of(module) -> torch.device:
    """Where a network lives: the device of its first parameter (else buffer); the CPU if it has none."""
    for tensors in (module.parameters(), module.buffers()):
        t = next(iter(tensors), None)
        if t is not None:
            return t.device
    return torch.device("cpu")


def on_device(module, device):
    """``module`` if it already lives on ``device``, else a deep copy moved there (the caller's stays as it is)."""
    import copy

    device, here = get_device(device), device_of(module)
    if here.type == device.type and (device.index is None or device.index == here.index):
        return module
    return copy.deepcopy(module).to(device)


def finite_extremes(t: torch.Tensor) -> tuple[float, float] | None:
    """``(min, max)`` of a non-empty floating tensor, or None if it holds NaN or Inf: one fused pass
    (``torch.aminmax``, which propagates NaN) instead of looking for NaN and Inf separately, which
    had made the checks at facelab's boundaries a large part of labelling 1024 px faces
    (``bench/labelers.py --resolution 1024``, in the README)."""
    lo, hi = (float(v) for v in torch.aminmax(t.detach()))
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def check_finite(x, what: str, *, fix: str = "pass finite values", error: type[Exception] = ValueError) -> None:
    """Raise a one-line ``error`` if the number or tensor ``x`` holds NaN or Inf, saying which.

    ``what`` names ``x`` in the message and ``fix`` says what to do. Numbers are checked as given;
    tensors in their own dtype (so a float32 tensor built from 1e39 is reported as overflowing).
    """
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)
    if not t.is_floating_point() or t.numel() == 0 or finite_extremes(t) is not None:
        return
    nan, inf = bool(t.isnan().any()), bool(t.isinf().any())
    if nan or inf:
        kinds = " and ".join(k for k, hit in (("NaN", nan), ("Inf", inf)) if hit)
        over = f" (values beyond ±{torch.finfo(t.dtype).max:.3g} overflow {str(t.dtype)[6:]} to Inf)" if inf else ""
        raise error(f"{kinds} in {what}{over}; {fix}")


def check_loss(loss: float, step: int, what: str, fix: str) -> None:
    """Stop a diverging optimisation: ``FloatingPointError`` naming the step and the loss when it is not finite."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"{what} diverged at step {step}: the loss is {loss}; {fix}")


def annealed_lr(step: int, lr: float, steps: int, anneal_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of a ``steps``-step run: ``lr``, then a half cosine
    over the last ``anneal_steps`` steps (0: constant), from ``lr`` at the first of them towards 0, which
    step ``steps`` (one past the run) would reach: the last step takes a small rate, not 0, and one
    annealed step changes nothing. The shipped runs used this schedule, and the trainers that take it
    check on resuming that the steps already taken keep their rates
    (``facelab.train.loop.check_schedule``), so it stays as it is."""
    start = steps - anneal_steps
    if anneal_steps <= 0 or step < start:
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * (step - start) / anneal_steps))


def seed_all(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices). Returns a CPU ``torch.Generator`` with the seed."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def z_from_seeds(seeds, z_dim: int, *, device=None) -> torch.Tensor:
    """One latent z ~ N(0, I) per seed: [len(seeds), z_dim], on ``device`` (None: :func:`get_device`).

    Drawn on the CPU and then moved, so a seed names the same face on every device.
    """
    z = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(z).to(get_device(device))


class Config:
    """Base of facelab's configs: frozen dataclasses with the paper's values as defaults.

    Subclasses are ``@dataclass(frozen=True)``: a config never changes after it is made (two
    algorithms given the same object cannot affect each other); :meth:`replace` makes a changed
    copy. :meth:`from_dict` refuses unknown keys with a one-line error instead of dropping them.
    ``DERIVED`` names fields that are shorthands for parts of another field: they are filled in by
    ``__post_init__``, left out of :meth:`to_dict`, and only override when given.
    """

    DERIVED: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in self.DERIVED}

    @classmethod
    def from_dict(cls, d) -> "Config":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known), key=str)
        if unknown:
            raise ValueError(f"{cls.__name__} has no {', '.join(map(str, unknown))}; known: {', '.join(known)} "
                             "(a typo, or a file from another facelab version?)")
        return cls(**d)

    def replace(self, **changes) -> "Config":
        """A copy with ``changes`` (unknown names refused as in :meth:`from_dict`)."""
        kept = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.DERIVED}
        return type(self).from_dict({**kept, **changes})


def configured(cls: type[Config], config: Config | None, hyper: dict, caller: str) -> Config:
    """``config`` (default ``cls()``) with ``hyper``, fields of ``cls`` that ``caller`` took as keyword
    arguments, applied on top: ``project(G, x, steps=300)`` as well as ``project(G, x, config=...)``."""
    config = cls() if config is None else config
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    unknown = sorted(set(hyper) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}; hyperparameters are the fields of "
                        f"{cls.__name__}")
    return config.replace(**hyper) if hyper else config


def show_source(obj) -> None:
    """Display the source of a function or class, highlighted in Jupyter, plain text elsewhere."""
    src = inspect.getsource(obj)
    try:
        from IPython import get_ipython
        from IPython.display import Code, display
        if get_ipython() is not None:
            display(Code(src, language="python"))
            return
    except ImportError:
        pass
    print(src)


def write_card_section(card, markdown: str, *, tag: str = "metrics") -> None:
    """Replace the text between ``<!-- {tag}:start -->`` and ``<!-- {tag}:end -->`` in a model card.

    The markers are appended if absent (the card is created if missing); the rest is untouched.
    """
    import re
    from pathlib import Path

    card = Path(card)
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    text = card.read_text() if card.exists() else "# Model card\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    card.write_text(text)
