"""NVIDIA StyleGAN2-ADA network pickles, read as data (facelab/nvidia.py).

No NVIDIA pickle can be downloaded here, so these tests write pickles with the same structure as
StyleGAN2-ADA's: every network object pickled through ``torch_utils.persistence``
(``_reconstruct_persistent_obj(meta)`` with the module source, the class name and the object's
``__dict__``), parameters and buffers in ``_parameters`` / ``_buffers`` / ``_modules`` under the
official names (``facelab.nets.official``), constructor arguments in ``_init_kwargs`` as
``dnnlib.EasyDict``. The stand-in ``torch_utils.persistence`` does what NVIDIA's does on load: it
``exec``-utes the stored source; the tests check that facelab never gets that far.
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

import facelab as fl
from facelab import hub, nvidia
from facelab.nets.official import facelab_to_official

BUFFERS = ("w_avg", "noise_const", "resample_filter")


@pytest.fixture
def nv(monkeypatch):
    """Stand-ins for NVIDIA's ``torch_utils.persistence`` and ``dnnlib`` so that pickles can be written."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # NVIDIA's loader runs the stored module source
        exec(meta["module_src"], {})
        return meta["state"]

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.util = util
    for name, mod in (("torch_utils", torch_utils), ("torch_utils.persistence", persistence),
                      ("dnnlib", dnnlib), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, mod)

    class Persistent:
        """Pickles like a module decorated with ``persistence.persistent_class``."""

        def __init__(self, class_name, state, src):
            self.class_name, self.state, self.src = class_name, state, src

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src=self.src, class_name=self.class_name, state=self.state)
            return _reconstruct_persistent_obj, (meta,)

    return types.SimpleNamespace(Persistent=Persistent, EasyDict=EasyDict)


def ada_kwargs(nv, cfg, *, flat=False, **changes):
    syn = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=0,
               conv_clamp=cfg.conv_clamp)
    kw = dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
              img_channels=cfg.img_channels,
              mapping_kwargs=nv.EasyDict(num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_multiplier))
    kw.update(syn) if flat else kw.update(synthesis_kwargs=nv.EasyDict(syn))
    kw.update(changes)
    return kw


def network(nv, official: dict, init_kwargs: dict, src: str, class_name: str = "Generator"):
    """A tree of persistent objects shaped like StyleGAN2-ADA's modules, holding ``official`` tensors."""
    root: dict = {}
    for key, t in official.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = t

    def build(name, node, kwargs):
        params, buffers, modules = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
        for k, v in node.items():
            if isinstance(v, dict):
                modules[k] = build(k, v, {})
            elif k in BUFFERS:
                buffers[k] = v.clone()
            else:
                params[k] = torch.nn.Parameter(v.clone())
        state = {"training": False, "_parameters": params, "_buffers": buffers, "_non_persistent_buffers_set": set(),
                 "_modules": modules, "_init_args": (), "_init_kwargs": nv.EasyDict(kwargs)}
        return nv.Persistent(name, state, src)

    return build(class_name, root, init_kwargs)


def write_pickle(path, nv, G, *, src="pass", which=("G", "G_ema"), **kw_changes):
    official = facelab_to_official(G.state_dict())
    net = network(nv, official, ada_kwargs(nv, G.cfg, **kw_changes), src)
    data = {name: net for name in which}
    data.update(D=None, augment_pipe=None,
                training_set_kwargs=nv.EasyDict(resolution=G.img_resolution, max_size=np.int64(70000)),
                progress=np.array([1.0, 2.0]))
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def test_loads_an_ada_pickle_into_the_same_generator(nv, G, tmp_path):
    path = write_pickle(tmp_path / "net.pkl", nv, G)
    G2 = fl.load_generator(str(path))
    assert G2.cfg == G.cfg
    sd, sd2 = G.state_dict(), G2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G(z, noise_mode="const"), G2(z, noise_mode="const"))
    assert G2.meta["entry"] == "G_ema" and not G2.training
    assert not any(p.requires_grad for p in G2.parameters())


def test_flat_constructor_arguments_and_the_G_entry(nv, G, tmp_path):
    """legacy.py conversions put the synthesis arguments at the top level; 'G' is the raw generator."""
    path = write_pickle(tmp_path / "net.pkl", nv, G, which=("G",), flat=True)
    assert nvidia.load_generator(path, which="G").cfg == G.cfg
    with pytest.raises(ValueError, match=r"no network 'G_ema'.*which='G'"):
        nvidia.load_generator(path)


def test_the_stored_source_never_runs(nv, G, tmp_path):
    flag = tmp_path / "ran"
    src = f"open({str(flag)!r}, 'w').write('pwned')"
    path = write_pickle(tmp_path / "net.pkl", nv, G, src=src)
    fl.load_generator(str(path))
    net = nvidia.read_pickle(path)["G_ema"]
    assert not flag.exists()
    assert net.source == src and net.kind == "Generator"  # kept as text
    with open(path, "rb") as f:  # the same file through plain pickle: NVIDIA's loader runs it
        pickle.load(f)
    assert flag.read_text() == "pwned"


class _Evil:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return os.system, (f"touch {self.flag}",)


def test_refuses_globals_outside_the_allow_list(G, tmp_path):
    flag = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _Evil(flag)}, f)
    with pytest.raises(ValueError, match=r"refused global (posix|nt|os)\.system.*never runs code"):
        fl.load_generator(str(path))
    assert not flag.exists()


class _EvilStorage:
    """A "storage" whose nested torch.save blob calls os.system when unpickled without weights_only."""

    def __init__(self, flag):
        self.blob = io.BytesIO()
        torch.save(_Evil(flag), self.blob, _use_new_zipfile_serialization=False)

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.blob.getvalue(),)


def test_refuses_code_hidden_in_a_tensor_storage(tmp_path):
    flag = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _EvilStorage(flag)}, f)
    with pytest.raises(ValueError, match=r"unsafe.*storage in it holds more than a tensor.*system"):
        nvidia.read_pickle(path)
    assert not flag.exists()


def test_tensorflow_pickles_get_a_clear_message(nv, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dnnlib.tflib", types.ModuleType("dnnlib.tflib"))
    mod = types.ModuleType("dnnlib.tflib.network")

    class Network:
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    mod.Network = Network
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", mod)
    path = tmp_path / "tf.pkl"
    with open(path, "wb") as f:
        pickle.dump((Network(), Network(), Network()), f)
    with pytest.raises(ValueError, match="TensorFlow StyleGAN2 pickle.*legacy.py"):
        nvidia.read_pickle(path)


@pytest.mark.parametrize("changes, message", [
    ({"c_dim": 10}, "conditional"),
    ({"architecture": "resnet"}, "'resnet' architecture"),
    ({"z_dim": 999}, "disagree.*z_dim 999"),
])
def test_refuses_what_facelab_cannot_represent(nv, G, tmp_path, changes, message):
    path = write_pickle(tmp_path / "net.pkl", nv, G, **changes)
    with pytest.raises(ValueError, match=message):
        fl.load_generator(str(path))


def test_truncated_and_missing_files(nv, G, tmp_path):
    path = write_pickle(tmp_path / "net.pkl", nv, G)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable network pickle.*download it again"):
        fl.load_generator(str(cut))
    with pytest.raises(FileNotFoundError, match="no such network pickle"):
        fl.load_generator(str(tmp_path / "missing.pkl"))


def test_ffhq_by_name_downloads_once_and_pins_the_hash(nv, G, tmp_path, facelab_home):
    """``load_generator("ffhq")`` fetches NVIDIA's pickle (no published hash), pins its sha256 on first
    download, and refuses a different file afterwards."""
    data = write_pickle(tmp_path / "net.pkl", nv, G).read_bytes()
    calls = []

    def opener(url):
        calls.append(url)
        return io.BytesIO(data)

    G2 = fl.load_generator("ffhq", opener=opener)
    assert calls == [hub.REGISTRY["ffhq"].url] and G2.cfg == G.cfg
    cached = facelab_home / "weights" / hub.REGISTRY["ffhq"].filename
    pin = cached.with_name(cached.name + ".sha256")
    assert pin.read_text().strip() == hashlib.sha256(data).hexdigest() == G2.meta["sha256"]
    fl.load_generator("ffhq", opener=opener)
    assert len(calls) == 1  # from the cache
    cached.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])  # the cached file changes
    with pytest.raises(ValueError, match=r"expected .* for 'ffhq'.*its pin"):
        fl.load_generator("ffhq", opener=opener)
    cached.unlink()  # deleted; upstream now serves something else: the pin refuses it
    with pytest.raises(ValueError, match="changed upstream"):
        fl.load_generator("ffhq", opener=lambda url: io.BytesIO(b"other bytes"))
    assert not cached.exists()


def test_a_shipped_entry_needs_a_hash():
    with pytest.raises(ValueError, match="ship without a sha256"):
        hub.register(hub.WeightSpec(name="nohash", filename="x.pt", sha256=None))
