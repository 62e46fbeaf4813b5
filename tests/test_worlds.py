"""Worlds (#18): world64 serves exactly what the notebooks load today; a built world folder loads
from its world.json; missing artifacts and unknown names fail in one line; budgets follow the device."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import facelab as fl
from facelab import interpret as I
from facelab.hub import atomic_torch_save, export_generator
from facelab.mapper import LatentMapper, MapperConfig, load_mapper, save_mapper
from facelab.nets.regressor import REGRESSOR_FORMAT, AttributeRegressor
from facelab.worlds import PRESETS, WORLD_FORMAT, Budget, load_world, worlds_dir, write_world_json
from test_nvidia import nv, write_pickle  # noqa: F401  (nv: the fixture that writes StyleGAN2-ADA pickles)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_world64_serves_what_the_notebooks_load():
    world = fl.load_world("world64")
    assert isinstance(world, fl.World) and world.name == "world64" and world.crop == "world"
    assert world.resolution == 64
    assert same_state(world.G, fl.load_generator("world64"))
    assert world.G.img_resolution == 64
    assert same_state(world.H, fl.load_regressor())
    assert same_state(world.mapper, load_mapper())
    for space in ("w", "z"):
        got, want = world.boundaries(space), I.load_boundaries("world64", space=space)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k].normal, want[k].normal) and got[k].offset == want[k].offset for k in got)
    assert world.G is world.G  # loaded once


def test_with_files_swaps_artifacts_and_keeps_the_rest(G, tmp_path):
    folder = tmp_path / "mini"
    build_world(folder, G)
    world = load_world(folder)
    _ = world.G, world.H  # loaded before the swap
    torch.manual_seed(1)
    H = AttributeRegressor(width=2)
    atomic_torch_save({"format": REGRESSOR_FORMAT, "state_dict": H.state_dict(), "config": H.config(), "meta": {}},
                      tmp_path / "candidate.pt")
    swapped = world.with_files(regressor=tmp_path / "candidate.pt")
    assert swapped.G is world.G and swapped.H.width == 2 and world.H.width == 4  # the original is untouched
    assert swapped.files["mapper"] == world.files["mapper"] and swapped.budget("cpu").project_steps == 7
    assert torch.equal(swapped.boundaries("w")["age"].normal, world.boundaries("w")["age"].normal)
    with pytest.raises(ValueError, match="unknown world artifact.*'labels'"):
        world.with_files(labels="x.pt")
    with pytest.raises(FileNotFoundError, match="has no regressor yet.*facelab.train.build mini"):
        world.with_files(regressor=tmp_path / "missing.pt").H


def build_world(folder, G, *, with_artifacts=True):
    gen = export_generator(G, folder / "generator.pt")
    fields = {"generator": gen, "crop": "world", "budgets": {"cpu": {"project_steps": 7}}}
    if with_artifacts:
        torch.manual_seed(0)
        H = AttributeRegressor(width=4)
        atomic_torch_save({"format": REGRESSOR_FORMAT, "state_dict": H.state_dict(), "config": H.config(),
                           "meta": {}}, folder / "regressor.pt")
        w = torch.randn(G.w_dim)
        b = I.Boundary(normal=w / w.norm(), offset=0.5, attribute="age", space="w")
        I.save_boundaries(folder / "boundaries.pt", [b])
        m = LatentMapper(G.num_ws, G.w_dim, MapperConfig(depth=1))
        save_mapper(m, folder / "mapper.pt")
        fields.update(regressor="regressor.pt", boundaries=folder / "boundaries.pt", mapper="mapper.pt")
    return write_world_json(folder, **fields)


def test_a_built_world_folder_loads_by_name_and_by_path(G, facelab_home):
    folder = worlds_dir() / "mini"
    path = build_world(folder, G)
    data = json.loads(path.read_text())
    assert data["format"] == WORLD_FORMAT and data["name"] == "mini"
    assert data["generator"] == "generator.pt" and data["boundaries"] == "boundaries.pt"  # stored relative
    assert str(worlds_dir()).startswith(str(facelab_home))
    for world in (load_world("mini"), load_world(folder), load_world(str(folder))):
        assert world.name == "mini" and world.resolution == G.img_resolution
        assert same_state(world.G, G)
        assert list(world.H.names) == list(fl.load_regressor().names)
        b = world.boundaries("w")["age"]
        assert b.offset == 0.5 and b.normal.shape == (G.w_dim,)
        assert world.mapper.num_ws == G.num_ws
        assert world.budget("cpu").project_steps == 7  # the world's override
        assert world.budget("cpu").wplus_steps == PRESETS["cpu"].wplus_steps  # the rest from the preset


def test_a_generator_file_is_a_world_without_artifacts(G, tmp_path):
    gen = export_generator(G, tmp_path / "g.pt")
    world = load_world(gen)
    assert world.crop == "world" and world.resolution == G.img_resolution
    with pytest.raises(FileNotFoundError, match=r"python -m facelab\.train\.build g --generator .*g\.pt`") as e:
        world.H  # the name alone would find no generator: the command names the file
    assert "\n" not in str(e.value)


def test_missing_artifacts_fail_in_one_line_naming_the_build(G):
    folder = worlds_dir() / "bare"
    build_world(folder, G, with_artifacts=False)
    world = load_world("bare")
    assert same_state(world.G, G)  # the generator is there
    for get in (lambda: world.H, lambda: world.boundaries("w"), lambda: world.mapper):
        with pytest.raises(FileNotFoundError) as e:
            get()
        assert "`python -m facelab.train.build bare`" in str(e.value) and "\n" not in str(e.value)
    # ffhq before its build: the artifacts are looked for in $FACELAB_HOME/worlds/ffhq (nothing downloads)
    ffhq = load_world("ffhq")
    assert ffhq.crop == "ffhq" and ffhq.resolution == 1024
    with pytest.raises(FileNotFoundError, match=r"no regressor yet \(looked for .*worlds/ffhq/regressor\.pt\); "
                                                 r"build it with `python -m facelab\.train\.build ffhq`"):
        ffhq.H
    # a file that exists but is not what the world.json says it is
    (folder / "regressor.pt").write_bytes(b"not a checkpoint")
    write_world_json(folder, generator="generator.pt", regressor="regressor.pt")
    with pytest.raises(ValueError, match=r"regressor\.pt is not a plain-tensor torch file \(UnpicklingError: .*\); "
                                          r".*\(a damaged file: download or build it again\)$") as e:
        load_world("bare").H
    assert "\n" not in str(e.value)


def test_budgets_follow_the_device():
    world = load_world("world64")
    assert world.budget() == world.budget("cpu") == PRESETS["cpu"]  # the tests run with FACELAB_DEVICE=cpu
    assert world.budget(torch.device("cuda")) == PRESETS["paper"] == Budget()
    cpu, paper = PRESETS["cpu"], PRESETS["paper"]
    # the CPU preset spends less than the papers' on every count; the papers' values are the papers'
    fields = [f.name for f in dataclasses.fields(Budget)]
    assert all(1 <= getattr(cpu, f) < getattr(paper, f) for f in fields), cpu
    assert (paper.project_steps, paper.pti_pivot_steps, paper.pti_tune_steps, paper.mapper_steps) == (1000, 450, 350,
                                                                                                         2000)
    with pytest.raises(dataclasses_frozen_error()):
        cpu.project_steps = 1
    with pytest.raises(ValueError, match="has no steps"):
        Budget.from_dict({"steps": 3})
    with pytest.raises(ValueError, match="positive whole numbers"):
        Budget(project_steps=0)


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_bad_world_json_and_unknown_names_fail_in_one_line(G, tmp_path):
    with pytest.raises(KeyError, match=r"unknown world 'nowhere'.*python -m facelab\.train\.build nowhere"):
        load_world("nowhere")
    with pytest.raises(FileNotFoundError, match="without world.json"):
        load_world(tmp_path)
    with pytest.raises(FileNotFoundError, match="no world at"):
        load_world(tmp_path / "missing.pkl")
    with pytest.raises(ValueError, match="no field colour"):
        write_world_json(tmp_path / "w", generator="g.pt", colour="red")
    with pytest.raises(ValueError, match="unknown crop 'dlib'"):
        write_world_json(tmp_path / "w", generator="g.pt", crop="dlib")
    with pytest.raises(ValueError, match=r"budgets\['cpu'\]: Budget has no stepz"):
        write_world_json(tmp_path / "w", generator="g.pt", budgets={"cpu": {"stepz": 1}})
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "world.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match="is not a facelab world"):
        load_world(tmp_path / "v")


def test_align_uses_the_worlds_crop_and_resolution(G, monkeypatch):
    seen = {}

    def fake_align(photo, **kw):
        seen.update(kw)
        return photo

    monkeypatch.setattr(fl.faces, "align_face", fake_align)
    folder = worlds_dir() / "mini"
    build_world(folder, G, with_artifacts=False)
    monkeypatch.setenv("FACELAB_DEVICE", "meta")  # what get_device() would give: the world's own must win
    load_world("mini", device="cpu").align("photo.jpg")
    assert seen == {"size": G.img_resolution, "crop": "world", "device": torch.device("cpu")}
    seen.clear()
    load_world("ffhq", device="cpu").align("photo.jpg", index=0)  # the face is found on the world's device
    assert seen == {"size": 1024, "crop": "ffhq", "index": 0, "device": torch.device("cpu")}


# ---------------------------------------------------------------------------------------------
# ffhq through a download: a local file server stands in for NVIDIA's CDN (FACELAB_FFHQ_URL).


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "served"``; yields (folder, base URL, request log)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet, but counted
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_ffhq_downloads_from_the_url_override(nv, G, file_server, monkeypatch, facelab_home):
    folder, base, requests = file_server
    write_pickle(folder / "ffhq.pkl", nv, G)
    monkeypatch.setenv("FACELAB_FFHQ_URL", f"{base}/ffhq.pkl")
    assert fl.hub.url_env("ffhq") == "FACELAB_FFHQ_URL" and fl.hub.url_of("ffhq") == f"{base}/ffhq.pkl"
    world = load_world("ffhq")
    assert same_state(world.G, G) and world.G.meta["url"] == f"{base}/ffhq.pkl"
    assert world.G.meta["crop"] == "ffhq" == fl.metrics.generator_crop(fl.load_generator("ffhq"))  # chips follow it
    cached = facelab_home / "weights" / "stylegan2-ada-ffhq.pkl"
    assert cached.is_file() and cached.with_name(cached.name + ".sha256").is_file()  # pinned once it loaded
    assert len(requests) == 1
    assert same_state(load_world("ffhq").G, G) and len(requests) == 1  # the second use reads the cache
    monkeypatch.setenv("FACELAB_FFHQ_URL", "ffhq.pkl")
    with pytest.raises(ValueError, match="FACELAB_FFHQ_URL='ffhq.pkl' is not a URL"):
        fl.hub.url_of("ffhq")


def test_ffhq_offline_fails_in_one_line(offline_ffhq):
    world = load_world("ffhq")  # naming it downloads nothing
    with pytest.raises(ConnectionError, match=r"cannot download 'ffhq' from http://127\.0\.0\.1:\d+/ffhq\.pkl .*"
                                              r"set FACELAB_FFHQ_URL to a mirror, or place the file at") as e:
        world.G
    assert "\n" not in str(e.value)


def test_a_built_ffhq_world_keeps_the_downloaded_generator_and_its_crop(G, tmp_path, monkeypatch):
    folder = worlds_dir() / "ffhq"
    build_world(folder, G)  # artifacts as the build writes them ...
    write_world_json(folder, generator="ffhq", regressor="regressor.pt", boundaries="boundaries.pt",
                     mapper="mapper.pt")  # ... beside hub's download (a weights name, not a file)
    world = load_world("ffhq")
    assert world.generator == "ffhq" and world.crop == "ffhq"
    assert world.boundaries("w")["age"].offset == 0.5 and world.mapper.num_ws == G.num_ws
    # names come before paths: a folder called ffhq in the working directory is "./ffhq"
    (tmp_path / "ffhq").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_world("ffhq").generator == "ffhq"
    with pytest.raises(FileNotFoundError, match="without world.json"):
        load_world("./ffhq")
