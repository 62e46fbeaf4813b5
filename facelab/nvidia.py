"""NVIDIA's StyleGAN2-ADA network pickles, read without running any code from them.

The real FFHQ generators (``ffhq.pkl`` of the StyleGAN2-ADA PyTorch release, the one PTI and e4e
use, 1024 px) are Python pickles of NVIDIA's modules. Each module class there is wrapped by
``torch_utils.persistence``, which stores *the source code of its module* in the pickle and
``exec``-utes it on load: ``pickle.load`` of an untrusted network file runs whatever that source
says. facelab never does that. :func:`read_pickle` unpickles with an allow-list:

* tensors and parameters (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``), whose
  storages are nested ``torch.save`` blobs read back with ``torch.load(..., weights_only=True)``;
* plain containers (``OrderedDict``, ``set``, ``dnnlib``'s ``EasyDict`` as a dict) and numpy's
  bool, int and float scalars as Python numbers (NVIDIA's code passes numpy integers as arguments);
* every persistent network object becomes an inert :class:`PickledModule` holding its class
  name and its state (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``...): the stored
  module source is kept as text and never compiled;
* other classes from the network code (``training.*``, ``torch_utils.*``, ``torch.nn.*``,
  ``numpy``) become inert stand-ins with their pickled state;
* anything else (``os.system``, ``builtins.eval``, ``subprocess``...) stops the load with an error
  that names the refused global, before it is called.

Every error is one line: a module tree with a cycle or a shared submodule, a declared object larger
than memory, a StyleGAN3 generator, or a constructor argument facelab's generator cannot represent
(a non-lrelu activation, another architecture or resampling filter, ...) each stop the load.

:func:`read_generator` then turns ``G_ema`` (or ``G``) into a facelab
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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .nets.official import config_from_official_shapes, official_to_facelab
from .nets.stylegan2 import Generator, StyleGAN2Config
from .safeload import load_state, weights_only_refusal

__all__ = ["PickledModule", "generator_config", "read_generator", "read_pickle"]

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
        """Parameters and persistent buffers under their dotted names, as ``nn.Module.state_dict``.

        Walks the module tree once, without recursion; a module met twice (a cycle, or a submodule
        shared by two parents, which no StyleGAN2-ADA network has) raises a one-line ``ValueError``.
        """
        out: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        todo = [(prefix, self)]
        while todo:
            pre, module = todo.pop()
            if id(module) in seen:
                raise ValueError(f"module {pre.rstrip('.') or self.kind!r} appears twice in the network (a cycle or "
                                 "a shared submodule); this is not a StyleGAN2-ADA network pickle")
            seen.add(id(module))
            skip = set(module.state.get("_non_persistent_buffers_set") or ())
            for group in ("_parameters", "_buffers"):
                for name, t in (module.state.get(group) or {}).items():
                    if isinstance(t, torch.Tensor) and name not in skip:
                        out[pre + name] = t.detach()
            todo.extend((f"{pre}{name}.", child) for name, child in reversed(module.children().items()))
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
        raise _Refused(f"a tensor storage in it holds more than a tensor: {weights_only_refusal(e)}") from None


class _NumpyDtype:
    """``numpy.dtype`` as data: its type code (e.g. ``'i8'``) and, after BUILD, its byte order."""

    def __init__(self, code, align=False, copy=True):
        self.code, self.order = str(code), "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "="):
            self.order = state[1]


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar``: a bool, int or float scalar becomes the Python number; any
    other stays an inert stand-in."""
    if isinstance(dtype, _NumpyDtype) and re.fullmatch(r"[biuf]\d{1,2}", dtype.code) and isinstance(data, bytes):
        dt = np.dtype(dtype.code).newbyteorder(dtype.order)
        if len(data) == dt.itemsize:
            return np.frombuffer(data, dtype=dt)[0].item()
    return _standin("numpy", "scalar")(dtype, data)


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
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
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
    except (MemoryError, OverflowError):  # e.g. a tiny crafted file that declares a byte string of 2**62 bytes
        raise ValueError(f"{path} declares an object larger than memory ({path.stat().st_size:,} bytes on disk): "
                         "it is damaged or crafted; download it again from its publisher") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, KeyError,
            ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable network pickle ({type(e).__name__}: {str(e)[:120]}); "
                         "download it again") from None


# StyleGAN2-ADA's generator arguments (training/networks.py), by the network they configure. facelab's
# generator represents each one: through its config (read from the tensors and cross-checked), as the one
# value it implements (_ONLY), or because it does not change the image (num_fp16_res, use_fp16,
# channels_last, fp16_channels_last: precision and memory layout; w_avg_beta: training only).
_TOP_ARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
_MAPPING_ARGS = {"z_dim", "c_dim", "w_dim", "num_ws", "num_layers", "embed_features", "layer_features",
                 "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_ARGS = {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter", "conv_clamp",
                   "use_fp16", "fp16_channels_last", "channels_last", "kernel_size", "use_noise", "activation"}
_ONLY = {"activation": "lrelu", "architecture": "skip", "use_noise": True, "resample_filter": [1, 3, 3, 1],
         "kernel_size": 3}
_STYLEGAN3_ARGS = {"magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_critical", "first_cutoff",
                   "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "filter_size",
                   "lrelu_upsampling"}


def _refuse_unsupported(kw: dict, syn: dict, mapping: dict, keys) -> None:
    """A one-line ``ValueError`` for any constructor argument facelab's generator cannot represent."""
    if _STYLEGAN3_ARGS & set(syn) or any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k)
                                         for k in keys):
        raise ValueError("this is a StyleGAN3 generator (alias-free synthesis); facelab supports StyleGAN2 and "
                         "StyleGAN2-ADA generators only")
    unknown = sorted((set(syn) - _SYNTHESIS_ARGS - _TOP_ARGS) | (set(mapping) - _MAPPING_ARGS))
    if unknown:
        raise ValueError(f"this generator has constructor arguments facelab does not know ({', '.join(unknown)}); "
                         "facelab reads StyleGAN2-ADA generators only")
    if int(kw.get("c_dim", 0) or 0) > 0:
        raise ValueError(f"this generator is conditional (c_dim={kw['c_dim']}); facelab's generator is unconditional")
    for where, args in (("mapping", mapping), ("synthesis", syn)):
        for k, only in _ONLY.items():
            v = list(args[k]) if isinstance(args.get(k), (list, tuple)) else args.get(k, only)
            if v != only:
                raise ValueError(f"this generator's {where} network uses {k}={args[k]!r}; facelab's StyleGAN2 "
                                 f"implements only {k}={only!r}")
    if "w_avg_beta" in mapping and mapping["w_avg_beta"] is None:
        raise ValueError("this generator keeps no average W (w_avg_beta=None); facelab's generator needs it")
    if mapping.get("layer_features") not in (None, kw.get("w_dim")):
        raise ValueError(f"this generator's mapping layers are {mapping['layer_features']} wide; facelab's are "
                         f"w_dim={kw.get('w_dim')} wide (layer_features=None)")


def generator_config(net: PickledModule, state_dict: dict[str, torch.Tensor] | None = None) -> StyleGAN2Config:
    """facelab config of an ADA ``Generator`` from its ``init_kwargs``, checked against its shapes.

    Accepts both layouts NVIDIA writes: ``synthesis_kwargs={...}`` (StyleGAN2-ADA training) and the
    synthesis arguments at the top level (``legacy.py`` conversions). Refuses every argument facelab's
    generator cannot represent (conditional, StyleGAN3, another activation, architecture, filter...).
    """
    kw = net.init_kwargs
    syn = dict(kw.get("synthesis_kwargs") or {})
    syn.update({k: v for k, v in kw.items() if k not in ("mapping_kwargs", "synthesis_kwargs")})
    mapping = dict(kw.get("mapping_kwargs") or {})
    state_dict = state_dict if state_dict is not None else net.state_dict()
    _refuse_unsupported(kw, syn, mapping, state_dict)
    shapes = config_from_official_shapes(state_dict)
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


def read_generator(path: str | Path, *, which: str = "G_ema") -> Generator:
    """A facelab :class:`Generator` from an NVIDIA StyleGAN2-ADA network pickle (CPU, float32, eval).

    which: the pickle entry to load, ``"G_ema"`` (the averaged generator every paper samples from)
    or ``"G"``. ``G.meta`` records the source file and entry.
    """
    data = read_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get(which), PickledModule):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        nets = [k for k in ("G_ema", "G") if isinstance(data, dict) and isinstance(data.get(k), PickledModule)]
        fix = (f"pass which={nets[0]!r} to facelab.nvidia.read_generator" if nets else
               "it is not a StyleGAN2-ADA network pickle (those hold G, D and G_ema): pass NVIDIA's network-*.pkl")
        raise ValueError(f"{path} has no network {which!r} (it holds {keys}); {fix}")
    net = data[which]
    try:
        official = {k: v.float() for k, v in net.state_dict().items()}
        cfg = generator_config(net, official)
        state = official_to_facelab(official, which="G", cfg=cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: {e}") from None
    G = Generator(cfg)
    load_state(G, state, path, fix="the pickle is damaged or not a StyleGAN2-ADA generator; download it again")
    G.meta = {"source": str(path), "entry": which, "format": "StyleGAN2-ADA pickle", "class": net.kind}
    return G.eval().requires_grad_(False)
