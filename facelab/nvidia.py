"""NVIDIA's StyleGAN2-ADA network pickles, read without running any code from them.

The real FFHQ generators (``ffhq.pkl`` of the StyleGAN2-ADA PyTorch release, the one PTI and e4e
use, 1024 px) are Python pickles of NVIDIA's modules. Each module class there is wrapped by
``torch_utils.persistence``, which stores *the source code of its module* in the pickle and
``exec``-utes it on load: ``pickle.load`` of an untrusted network file runs whatever that source
says. facelab never does that. :func:`read_pickle` unpickles with an allow-list:

* tensors and parameters (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``), whose
  storages are nested ``torch.save`` blobs read back with ``torch.load(..., weights_only=True)``;
* plain containers (``OrderedDict``, ``set``, ``dnnlib``'s ``EasyDict`` as a dict);
* every persistent network object becomes an inert :class:`PickledModule` holding its class
  name and its state (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``...): the stored
  module source is kept as text and never compiled;
* other classes from the network code (``training.*``, ``torch_utils.*``, ``torch.nn.*``,
  ``numpy``) become inert stand-ins with their pickled state;
* anything else (``os.system``, ``builtins.eval``, ``subprocess``...) stops the load with an error
  that names the refused global, before it is called.

:func:`load_generator` then turns ``G_ema`` (or ``G``) into a facelab
:class:`~facelab.nets.stylegan2.Generator`: the architecture from the pickle's constructor
arguments (``init_kwargs``), cross-checked against the tensor shapes, and the weights renamed by
:mod:`facelab.nets.official`. ``facelab.load_generator("ffhq.pkl")`` goes through here.

    # online, once:  wget https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl
    G = fl.load_generator("ffhq.pkl")          # facelab Generator, 1024 px, eval mode
    net = fl.nvidia.read_pickle("ffhq.pkl")     # everything: G, G_ema, D, ... as PickledModules

TensorFlow pickles of the original StyleGAN2 release (``stylegan2-ffhq-config-f.pkl``) hold
TensorFlow graphs; they are refused with a message (convert them with NVIDIA's ``legacy.py``).
"""
from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .nets.official import config_from_official_shapes, official_to_facelab
from .nets.stylegan2 import Generator, StyleGAN2Config

__all__ = ["PickledModule", "read_pickle", "load_generator", "generator_config"]

# Modules whose classes may appear in a network pickle as inert stand-ins (nothing of theirs runs).
_STANDIN_MODULES = ("training.", "torch_utils.", "torch.nn.", "dnnlib.", "numpy")


@dataclass
class PickledModule:
    """A network object from a pickle, as data: ``kind`` (``module.Class`` as pickled, or the
    persistent class name) and ``state`` (its ``__dict__``: ``_parameters``, ``_buffers``,
    ``_modules``, ``_init_kwargs``, ...). ``source`` is the module source NVIDIA's persistence
    stores, kept as text and never executed."""

    kind: str
    state: dict = field(default_factory=dict)
    source: str | None = None

    def __setstate__(self, state):  # BUILD on a stand-in made by NEWOBJ / REDUCE
        self.state = state if isinstance(state, dict) else {"state": state}

    @property
    def init_kwargs(self) -> dict:
        """The constructor's keyword arguments (persistence's ``_init_kwargs``), or {}."""
        kw = self.state.get("_init_kwargs") or {}
        return dict(kw) if isinstance(kw, dict) else {}

    def children(self) -> dict[str, "PickledModule"]:
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if isinstance(v, PickledModule)}

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers under their dotted names, as ``nn.Module.state_dict``."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if isinstance(t, torch.Tensor) and name not in skip:
                    out[prefix + name] = t.detach()
        for name, child in self.children().items():
            out.update(child.state_dict(f"{prefix}{name}."))
        return out


def _standin(module: str, name: str):
    """A fresh inert class for ``module.name``: creating or building it only stores data."""
    kind = f"{module}.{name}"

    class StandIn(PickledModule):
        def __init__(self, *args, **kwargs):  # REDUCE with arguments (e.g. numpy's _reconstruct)
            super().__init__(kind=kind, state={"args": args} if args else {})

        def __new__(cls, *args, **kwargs):  # NEWOBJ
            obj = object.__new__(cls)
            obj.kind, obj.state, obj.source = kind, {}, None
            return obj

    StandIn.__name__ = StandIn.__qualname__ = name
    return StandIn


def _persistent(meta) -> PickledModule:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: keep, do not exec."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise _Refused("a persistent object in the pickle has an unknown layout")
    return PickledModule(kind=str(meta.get("class_name")), state=dict(meta["state"]),
                         source=meta.get("module_src") if isinstance(meta.get("module_src"), str) else None)


def _storage_from_bytes(b: bytes):
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (the blob is a nested torch.save)."""
    try:
        return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's weights_only unpickler refused the blob
        detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line.upper()), "not tensors")
        raise _Refused(f"a tensor storage in it holds more than a tensor: {detail[:160]}") from None


class _Refused(pickle.UnpicklingError):
    """The pickle reached for something facelab does not load."""


class _TensorFlowPickle(_Refused):
    """The pickle holds TensorFlow networks (the original StyleGAN2 release)."""


class _EasyDict(dict):
    """``dnnlib.EasyDict`` as a plain dict (the pickle only sets its items)."""


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    return data.detach()  # a tensor is all we need; no autograd state, no hooks


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "object"): object,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "dnnlib.tflib.network" and name == "Network":
            raise _TensorFlowPickle(f"{module}.{name}")
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        if module.startswith(_STANDIN_MODULES):
            return _standin(module, name)
        raise _Refused(f"refused global {module}.{name}")


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` for stand-in classes only (protocol 0/1 pickles of plain objects)."""
    if not (isinstance(cls, type) and issubclass(cls, PickledModule)):
        raise _Refused(f"refused to reconstruct {getattr(cls, '__name__', cls)!r}")
    return cls.__new__(cls)


def read_pickle(path: str | Path) -> Any:
    """Unpickle an NVIDIA network pickle as data (see the module doc). Never executes its code.

    Returns what the pickle holds, typically ``{"G": ..., "D": ..., "G_ema": ..., ...}`` with
    :class:`PickledModule` values. Raises a one-line ``ValueError`` for files that are not such
    pickles, TensorFlow pickles, or pickles that reach for anything outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such network pickle: {path}")
    try:
        with open(path, "rb") as f:
            return _Unpickler(f).load()
    except _TensorFlowPickle:
        raise ValueError(f"{path} is a TensorFlow StyleGAN2 pickle; facelab reads StyleGAN2-ADA PyTorch pickles "
                         "(e.g. ffhq.pkl of the ADA-PyTorch release); convert it with NVIDIA's legacy.py "
                         "first") from None
    except _Refused as e:
        raise ValueError(f"{path}: unsafe or unknown pickle content ({e}); facelab only reads tensors, containers "
                         "and StyleGAN2-ADA network objects, and never runs code from a file") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, KeyError,
            ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable network pickle ({type(e).__name__}: {str(e)[:120]}); "
                         "download it again") from None


def generator_config(net: PickledModule, state_dict: dict[str, torch.Tensor] | None = None) -> StyleGAN2Config:
    """facelab config of an ADA ``Generator`` from its ``init_kwargs``, checked against its shapes.

    Accepts both layouts NVIDIA writes: ``synthesis_kwargs={...}`` (StyleGAN2-ADA training) and the
    synthesis arguments at the top level (``legacy.py`` conversions). Refuses what facelab's
    generator cannot represent (conditional, non-"skip" architectures, no noise).
    """
    kw = net.init_kwargs
    syn = dict(kw.get("synthesis_kwargs") or {})
    syn.update({k: v for k, v in kw.items() if k not in ("mapping_kwargs", "synthesis_kwargs")})
    mapping = dict(kw.get("mapping_kwargs") or {})
    if int(kw.get("c_dim", 0) or 0) > 0:
        raise ValueError(f"this generator is conditional (c_dim={kw['c_dim']}); facelab's generator is unconditional")
    if syn.get("architecture", "skip") != "skip":
        raise ValueError(f"this generator uses the {syn['architecture']!r} architecture; facelab implements 'skip' "
                         "(StyleGAN2 config-e/f and every ADA generator)")
    if syn.get("use_noise", True) is False:
        raise ValueError("this generator has no noise inputs (use_noise=False); facelab's generator always has them")
    shapes = config_from_official_shapes(state_dict if state_dict is not None else net.state_dict())
    overrides = {"conv_clamp": syn.get("conv_clamp")}
    for ours, theirs in (("mapping_lr_multiplier", "lr_multiplier"), ("w_avg_beta", "w_avg_beta")):
        if mapping.get(theirs) is not None:
            overrides[ours] = float(mapping[theirs])
    cfg = StyleGAN2Config(**{**shapes.to_dict(), **overrides})
    declared = {"z_dim": kw.get("z_dim"), "w_dim": kw.get("w_dim"), "img_resolution": kw.get("img_resolution"),
                "img_channels": kw.get("img_channels"), "mapping_layers": mapping.get("num_layers"),
                "channel_base": syn.get("channel_base"), "channel_max": syn.get("channel_max")}
    bad = {k: (v, getattr(cfg, k)) for k, v in declared.items() if v is not None and int(v) != getattr(cfg, k)}
    if bad:
        raise ValueError(f"the pickle's constructor arguments disagree with its tensors: "
                         + ", ".join(f"{k} {a} vs {b}" for k, (a, b) in bad.items()))
    return cfg


def load_generator(path: str | Path, *, which: str = "G_ema") -> Generator:
    """A facelab :class:`Generator` from an NVIDIA StyleGAN2-ADA network pickle (CPU, float32, eval).

    which: the pickle entry to load, ``"G_ema"`` (the averaged generator every paper samples from)
    or ``"G"``. ``G.meta`` records the source file and entry.
    """
    data = read_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get(which), PickledModule):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} has no network {which!r} (it holds {keys}); pass which='G' or 'G_ema'")
    net = data[which]
    official = {k: v.float() for k, v in net.state_dict().items()}
    cfg = generator_config(net, official)
    G = Generator(cfg)
    G.load_state_dict(official_to_facelab(official, which="G", cfg=cfg))
    G.meta = {"source": str(path), "entry": which, "format": "StyleGAN2-ADA pickle", "class": net.kind}
    return G.eval().requires_grad_(False)
