"""Named weights (facelab/hub.py): safe loading, integrity checks, atomic writes, the cache."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from facelab import hub
from facelab.hub import (GENERATOR_FORMAT, WeightSpec, atomic_torch_save, download, export_generator,
                         load_file, load_generator, register, ship_generator, weights_path)


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    """Tests register names freely without touching the real registry."""
    monkeypatch.setattr(hub, "REGISTRY", dict(hub.REGISTRY))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeResponse:
    """What ``urllib.request.urlopen`` returns, enough for ``download``: .read(n) and a context manager."""

    def __init__(self, data: bytes, fail_after_reads: int | None = None):
        self.stream, self.reads, self.fail_after_reads = io.BytesIO(data), 0, fail_after_reads
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if self.fail_after_reads is not None and self.reads >= self.fail_after_reads:
            raise ConnectionResetError("connection reset by peer (fake)")
        self.reads += 1
        return self.stream.read(min(n, 1000) if n > 0 else n)  # small chunks: several reads

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        return False


class FakeOpener:
    def __init__(self, data: bytes, **kw):
        self.data, self.kw, self.calls = data, kw, []

    def __call__(self, url):
        self.calls.append(url)
        return FakeResponse(self.data, **self.kw)


PAYLOAD = bytes(range(256)) * 20  # 5120 bytes: six reads of at most 1000


# ---------------------------------------------------------------------------------------------
# Generators in and out


def test_export_load_round_trip(G, tmp_path):
    path = export_generator(G, tmp_path / "g.pt", meta={"kimg": 1.5})
    G2 = load_generator(path, device="cpu")
    assert G2.cfg == G.cfg
    assert G2.meta == {"kimg": 1.5}
    assert not G2.training
    assert not any(p.requires_grad for p in G2.parameters())
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(G2.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))
    assert torch.equal(G2.w_avg, G.w_avg)
    # A str path works too.
    assert load_generator(str(path), device="cpu").cfg == G.cfg


class _Payload:
    """Unpickling this object would create ``path``: the sentinel proves whether code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (_touch, (self.path,))


def _touch(path):
    Path(path).write_text("code from a pickle ran")


def test_load_file_never_runs_code_from_a_pickle(tmp_path):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(sentinel)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_file(path)
    assert not sentinel.exists()
    with pytest.raises(ValueError, match="weights_only"):
        load_generator(path, device="cpu")
    assert not sentinel.exists()
    # Control: the ordinary unpickler does run the payload, so the sentinel is a valid witness.
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_load_file_refuses_functions_and_non_torch_files(tmp_path):
    path = tmp_path / "fn.pt"
    torch.save({"fn": _touch}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_file(path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a zip or a pickle")
    with pytest.raises(ValueError, match="weights_only"):
        load_file(junk)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_file(tmp_path / "missing.pt")


def test_load_generator_rejects_other_torch_files(tmp_path):
    path = tmp_path / "state_dict.pt"
    torch.save({"synthesis.b4.const": torch.zeros(4, 4, 4)}, path)
    with pytest.raises(ValueError, match=GENERATOR_FORMAT.replace(".", r"\.")) as e:
        load_generator(path, device="cpu")
    assert "export_generator" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Registry


def test_register_rejects_duplicates_and_bad_hashes():
    spec = WeightSpec(name="mine", filename="mine.pt", sha256="0" * 64)
    assert register(spec) is spec
    with pytest.raises(ValueError, match="overwrite=True"):
        register(spec)
    register(WeightSpec(name="mine", filename="other.pt", sha256="1" * 64), overwrite=True)
    assert hub.REGISTRY["mine"].filename == "other.pt"
    with pytest.raises(ValueError, match="64 hex"):
        register(WeightSpec(name="short", filename="s.pt", sha256="abc"))


def test_weights_path_unknown_name_lists_known_names():
    register(WeightSpec(name="alpha", filename="a.pt", sha256="0" * 64))
    with pytest.raises(KeyError) as e:
        weights_path("no-such-weights")
    assert "no-such-weights" in str(e.value) and "alpha" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Downloads


def test_download_writes_the_verified_file(tmp_path):
    opener = FakeOpener(PAYLOAD)
    dest = download("https://example.invalid/w.pt", tmp_path / "sub" / "w.pt", sha256=sha(PAYLOAD), opener=opener)
    assert dest.read_bytes() == PAYLOAD
    assert opener.calls == ["https://example.invalid/w.pt"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.pt"]


def test_download_with_wrong_hash_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        download("https://example.invalid/w.pt", tmp_path / "w.pt", sha256="f" * 64, opener=FakeOpener(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_download_interrupted_mid_stream_leaves_no_file(tmp_path):
    opener = FakeOpener(PAYLOAD, fail_after_reads=2)  # 2000 bytes written, then the connection drops
    with pytest.raises(ConnectionResetError):
        download("https://example.invalid/w.pt", tmp_path / "w.pt", sha256=sha(PAYLOAD), opener=opener)
    assert list(tmp_path.iterdir()) == []


def test_weights_path_downloads_once_into_facelab_home(facelab_home):
    spec = register(WeightSpec(name="remote", filename="remote.pt", sha256=sha(PAYLOAD),
                               url="https://example.invalid/remote.pt"))
    opener = FakeOpener(PAYLOAD)
    path = weights_path("remote", opener=opener)
    assert path == facelab_home / "weights" / spec.filename
    assert path.read_bytes() == PAYLOAD
    assert weights_path("remote", opener=opener) == path
    assert len(opener.calls) == 1  # the second call used the cache
    # A corrupted cache entry is refused, with the fix in the message.
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ValueError, match="delete the file"):
        weights_path("remote", opener=opener)
    assert len(opener.calls) == 1


def test_weights_path_failed_download_explains_the_offline_fix(facelab_home):
    register(WeightSpec(name="remote", filename="remote.pt", sha256=sha(PAYLOAD), url="https://example.invalid/r.pt"))
    with pytest.raises(ConnectionError) as e:
        weights_path("remote", opener=FakeOpener(PAYLOAD, fail_after_reads=0))
    assert str(facelab_home / "weights" / "remote.pt") in str(e.value)
    assert not (facelab_home / "weights" / "remote.pt").exists()


def test_load_generator_by_name_from_a_url(G, tmp_path):
    data = export_generator(G, tmp_path / "src.pt").read_bytes()
    register(WeightSpec(name="tiny-remote", filename="tiny-remote.pt", sha256=sha(data),
                        url="https://example.invalid/tiny.pt"))
    G2 = load_generator("tiny-remote", device="cpu", opener=FakeOpener(data))
    assert G2.cfg == G.cfg


# ---------------------------------------------------------------------------------------------
# Shipping and atomic saves


def test_ship_generator_then_load_by_name(G, tmp_path, monkeypatch):
    pkg = tmp_path / "package_weights"
    pkg.mkdir()
    monkeypatch.setattr(hub, "PACKAGE_WEIGHTS", pkg)
    monkeypatch.setattr(hub, "MANIFEST", pkg / "manifest.json")
    src = export_generator(G, tmp_path / "run" / "generator.pt")
    dest = ship_generator(src, "tinyworld", description="a test world")
    assert dest == pkg / "tinyworld.pt"
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["tinyworld"]["sha256"] == sha(dest.read_bytes())
    assert manifest["tinyworld"]["filename"] == "tinyworld.pt"
    G2 = load_generator("tinyworld", device="cpu")
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(G2.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))
    assert sorted(p.name for p in pkg.iterdir()) == ["manifest.json", "tinyworld.pt"]
    # A shipped file that no longer matches its manifest is refused.
    dest.write_bytes(dest.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        load_generator("tinyworld", device="cpu")


def test_ship_generator_refuses_what_does_not_load(tmp_path, monkeypatch):
    pkg = tmp_path / "package_weights"
    pkg.mkdir()
    monkeypatch.setattr(hub, "PACKAGE_WEIGHTS", pkg)
    monkeypatch.setattr(hub, "MANIFEST", pkg / "manifest.json")
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError):
        ship_generator(bad, "bad")
    assert list(pkg.iterdir()) == []


def test_atomic_torch_save_leaves_no_temp_files(tmp_path):
    path = atomic_torch_save({"x": torch.arange(3)}, tmp_path / "a" / "obj.pt")
    assert torch.equal(load_file(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pt"]
    # A failing save (a lambda cannot be pickled) keeps the old file intact and leaves no temp file.
    with pytest.raises(Exception):
        atomic_torch_save({"x": torch.zeros(1), "f": lambda: None}, path)
    assert torch.equal(load_file(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pt"]
