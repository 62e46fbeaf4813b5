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
import copy
import hashlib
import io
import os
import pickle
import struct
import sys
import threading
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


def ada_kwargs(nv, cfg, *, flat=False, mapping=None, synthesis=None, **changes):
    syn = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=0,
               conv_clamp=cfg.conv_clamp)
    syn.update(synthesis or {})
    kw = dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
              img_channels=cfg.img_channels,
              mapping_kwargs=nv.EasyDict(num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_multiplier))
    kw["mapping_kwargs"].update(mapping or {})
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
    assert nvidia.read_generator(path, which="G").cfg == G.cfg
    with pytest.raises(ValueError, match=r"no network 'G_ema'.*which='G'"):
        nvidia.read_generator(path)
    import pickle

    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"a": 1}))  # no network at all: which= would not help
    with pytest.raises(ValueError, match=r"holds \['a'\]\); it is not a StyleGAN2-ADA network pickle"):
        nvidia.read_generator(other)


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
    ({"synthesis": {"architecture": "resnet"}}, "synthesis network uses architecture='resnet'.*only .*='skip'"),
    ({"synthesis": {"architecture": "orig"}}, "architecture='orig'"),
    ({"synthesis": {"activation": "relu"}}, "synthesis network uses activation='relu'.*only activation='lrelu'"),
    ({"synthesis": {"activation": "relu"}, "flat": True}, "activation='relu'"),
    ({"mapping": {"activation": "linear"}}, "mapping network uses activation='linear'"),
    ({"synthesis": {"use_noise": False}}, "use_noise=False"),
    ({"synthesis": {"resample_filter": [1, 2, 1]}}, r"resample_filter=\[1, 2, 1\]"),
    ({"synthesis": {"kernel_size": 1}}, "kernel_size=1"),
    ({"mapping": {"layer_features": 64}}, "64 wide"),
    ({"mapping": {"w_avg_beta": None}}, "w_avg_beta=None"),
    ({"synthesis": {"fused_modconv_default": True}}, r"does not know \(fused_modconv_default\)"),
    ({"z_dim": 999}, "disagree.*z_dim 999"),
])
def test_refuses_what_facelab_cannot_represent(nv, G, tmp_path, changes, message):
    """Each argument our generator cannot represent would render other images: it stops the load."""
    path = write_pickle(tmp_path / "net.pkl", nv, G, **changes)
    with pytest.raises(ValueError, match=message) as e:
        fl.load_generator(str(path))
    assert "\n" not in str(e.value)


def test_arguments_that_do_not_change_the_image_are_accepted(nv, G, tmp_path):
    """fp16 and memory-layout flags, and explicit default values, load into the same generator."""
    path = write_pickle(tmp_path / "net.pkl", nv, G, mapping={"activation": "lrelu", "layer_features": None},
                        synthesis={"num_fp16_res": 4, "channels_last": True, "fp16_channels_last": True,
                                   "activation": "lrelu", "resample_filter": (1, 3, 3, 1), "kernel_size": 3,
                                   "architecture": "skip", "use_noise": True})
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fl.load_generator(str(path))(z, noise_mode="const"), G(z, noise_mode="const"))


def test_numpy_integers_in_constructor_arguments(nv, G, tmp_path):
    """NVIDIA's code accepts numpy scalars as arguments; they are read as the Python numbers."""
    cfg = G.cfg
    path = write_pickle(tmp_path / "net.pkl", nv, G, z_dim=np.int64(cfg.z_dim), w_dim=np.int32(cfg.w_dim),
                        img_resolution=np.int64(cfg.img_resolution), c_dim=np.int64(0),
                        mapping={"num_layers": np.int64(cfg.mapping_layers), "lr_multiplier": np.float64(0.01)},
                        synthesis={"channel_base": np.uint32(cfg.channel_base), "use_noise": np.bool_(True)})
    G2 = fl.load_generator(str(path))
    assert G2.cfg == G.cfg
    kw = nvidia.read_pickle(path)["G_ema"].init_kwargs
    assert type(kw["z_dim"]) is int and type(kw["synthesis_kwargs"]["use_noise"]) is bool


@pytest.fixture
def training_module(monkeypatch):
    """An importable ``training.networks`` whose classes pickle as plain objects (NEWOBJ + BUILD)."""
    mod = types.ModuleType("training.networks")
    for name in ("Generator", "Block"):
        cls = type(name, (), {})
        cls.__module__, cls.__qualname__ = "training.networks", name
        setattr(mod, name, cls)
    monkeypatch.setitem(sys.modules, "training", types.ModuleType("training"))
    monkeypatch.setitem(sys.modules, "training.networks", mod)
    return mod


def test_a_self_referencing_module_is_a_one_line_error(training_module, tmp_path):
    g = training_module.Generator()
    g.__dict__.update(_parameters={}, _buffers={}, _modules={"synthesis": g}, _init_kwargs={})
    path = tmp_path / "loop.pkl"
    path.write_bytes(pickle.dumps({"G_ema": g}, protocol=4))
    assert path.stat().st_size < 400
    with pytest.raises(ValueError, match=r"loop\.pkl: module 'synthesis' appears twice.*not a StyleGAN2-ADA"):
        fl.load_generator(str(path))


def test_shared_submodules_do_not_explode(training_module, tmp_path):
    """40 levels that each hold the level below twice: 2**40 paths, refused at once."""
    node = training_module.Block()
    node.__dict__.update(_parameters={"w": torch.zeros(1)}, _modules={})
    for _ in range(40):
        parent = training_module.Block()
        parent.__dict__.update(_parameters={}, _modules={"a": node, "b": node})
        node = parent
    node.__dict__["_init_kwargs"] = {}
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"G_ema": node}, protocol=4))
    errors = []

    def load():
        try:
            nvidia.read_generator(path)
        except ValueError as e:
            errors.append(str(e))

    worker = threading.Thread(target=load, daemon=True)  # bounded: before the fix this ran for hours
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and len(errors) == 1 and "appears twice" in errors[0]


def test_stylegan3_is_named(nv, tmp_path):
    t = torch.zeros
    official = {"mapping.fc0.weight": t(8, 8), "mapping.fc0.bias": t(8), "mapping.w_avg": t(8),
                "synthesis.input.freqs": t(8, 2), "synthesis.input.phases": t(8),
                "synthesis.input.affine.weight": t(4, 8), "synthesis.L0_36_8.weight": t(8, 8, 3, 3)}
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=32768,
                  channel_max=512, magnitude_ema_beta=0.999, mapping_kwargs=nv.EasyDict(num_layers=1))
    path = tmp_path / "sg3.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": network(nv, official, kwargs, "pass")}, f, protocol=4)
    with pytest.raises(ValueError, match="StyleGAN3 generator.*StyleGAN2 and StyleGAN2-ADA generators only"):
        fl.load_generator(str(path))


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d"])  # BINBYTES8, BINUNICODE8
def test_a_huge_declared_object_is_a_one_line_error(tmp_path, opcode):
    path = tmp_path / "huge.pkl"
    path.write_bytes(b"\x80\x04" + opcode + struct.pack("<Q", 2 ** 62) + b"xyz.")
    with pytest.raises(ValueError, match=r"huge\.pkl declares an object larger than memory.*download it again"):
        fl.load_generator(str(path))


def test_nan_weights_are_refused(nv, G, tmp_path):
    bad = copy.deepcopy(G)
    with torch.no_grad():
        bad.synthesis.b4.conv1.weight[0, 0, 0, 0] = float("nan")
    path = write_pickle(tmp_path / "net.pkl", nv, bad)
    with pytest.raises(ValueError, match=r"NaN in synthesis\.b4\.conv1\.weight"):
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


def test_a_world_is_built_from_an_ada_pickle(nv, G, tmp_path):
    from facelab.train import build as B
    path = write_pickle(tmp_path / "net.pkl", nv, G)
    B.main(["fromnv", "--home", str(tmp_path), "--generator", str(path), "--only", "cards"])
    G2 = fl.load_generator(tmp_path / "worlds" / "fromnv" / "generator.pt")  # a facelab file now, not the pickle
    assert G2.cfg == G.cfg
    torch.testing.assert_close(G2.state_dict()["synthesis.b4.const"], G.state_dict()["synthesis.b4.const"])
