"""Named weights (facelab/hub.py): safe loading, integrity checks, atomic writes, the cache."""
from __future__ import annotations

import collections
import errno
import hashlib
import http.server
import io
import json
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest
import torch

from facelab import hub
from facelab.hub import (GENERATOR_FORMAT, WeightSpec, atomic_torch_save, download, export_generator,
                         load_file, load_generator, register, sha256_file, ship_generator, weights_path)


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


def test_paths_under_the_home_folder_load_as_a_shell_would_read_them(G, tmp_path, monkeypatch):
    from facelab.interpret import Boundary, load_boundaries, save_boundaries

    monkeypatch.setenv("HOME", str(tmp_path))
    export_generator(G, tmp_path / "g.pt")
    save_boundaries(tmp_path / "b.pt", {"age": Boundary(torch.ones(G.w_dim) / G.w_dim ** 0.5, attribute="age",
                                                         space="w")})
    assert load_generator("~/g.pt", device="cpu").cfg == G.cfg
    assert list(load_boundaries("~/b.pt")) == ["age"]


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
    with pytest.raises(ValueError, match="sha256.*reinstall facelab") as e:
        load_generator("tinyworld", device="cpu")
    assert "will be fetched again" not in str(e.value)  # shipped files never are


def test_ship_generator_refuses_what_does_not_load(tmp_path, monkeypatch):
    pkg = tmp_path / "package_weights"
    pkg.mkdir()
    monkeypatch.setattr(hub, "PACKAGE_WEIGHTS", pkg)
    monkeypatch.setattr(hub, "MANIFEST", pkg / "manifest.json")
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match=r"bad\.pt is not a facelab generator file"):
        ship_generator(bad, "bad")
    assert list(pkg.iterdir()) == []


def test_atomic_torch_save_leaves_no_temp_files(tmp_path):
    path = atomic_torch_save({"x": torch.arange(3)}, tmp_path / "a" / "obj.pt")
    assert torch.equal(load_file(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pt"]
    # A failing save (a lambda cannot be pickled) keeps the old file intact and leaves no temp file.
    with pytest.raises(AttributeError, match=r"Can't pickle local object"):
        atomic_torch_save({"x": torch.zeros(1), "f": lambda: None}, path)
    assert torch.equal(load_file(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pt"]


def test_atomic_torch_save_is_byte_for_byte_reproducible(G, tmp_path):
    obj = {"state_dict": G.state_dict(), "meta": {"kimg": 1.5}}
    first = sha256_file(atomic_torch_save(obj, tmp_path / "a.pt"))
    assert sha256_file(atomic_torch_save(obj, tmp_path / "a.pt")) == first  # saved again
    assert sha256_file(atomic_torch_save(obj, tmp_path / "sub" / "b.pt")) == first  # under another name
    # The shipped dlib port was written so (train/convert_dlib.py): saving what it holds reproduces its hash.
    dlib = load_file(hub.PACKAGE_WEIGHTS / "dlib_resnet.pt")
    assert sha256_file(atomic_torch_save(dlib, tmp_path / "dlib.pt")) == hub.REGISTRY["dlib_resnet"].sha256


def test_an_unsafe_file_is_refused_naming_the_global_not_advising_to_disable_the_check(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"run": os.system}, path)
    with pytest.raises(ValueError) as e:
        load_file(path)
    message = str(e.value)
    assert re.search(r"refused global (posix|nt)\.system", message) and "never unpickles code" in message
    assert "weights_only` set to `False" not in message and "Re-running" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# Downloads from a local loopback server (127.0.0.1 only) that can truncate, stall and lie


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (mode, body)``: "full", "truncate" (announces the whole body,
    sends half, hangs up), "stall" (never answers), "stall-body" (sends half, then goes silent)."""

    def do_GET(self):
        srv = self.server
        srv.hits[self.path] += 1
        mode, body = srv.routes[self.path]
        if mode == "stall":
            srv.release.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if mode == "full" else body[: len(body) // 2])
        if mode == "stall-body":
            srv.release.wait(10)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # eight clients at once: none waits for a TCP retry


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes, srv.hits, srv.release = {}, collections.Counter(), threading.Event()
    srv.url = lambda route: f"http://127.0.0.1:{srv.server_port}{route}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def generator_bytes(G, tmp_path):
    return export_generator(G, tmp_path / "src" / "g.pt").read_bytes()


def unhashed(server, body: bytes, mode: str = "full") -> Path:
    """Register "remote", served by ``server`` without a published hash (pinned once it loads): its cache path."""
    server.routes["/remote.pt"] = (mode, body)
    spec = register(WeightSpec(name="remote", filename="remote.pt", sha256=None, url=server.url("/remote.pt")),
                    overwrite=True)
    return hub.cache_dir() / spec.filename


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".tmp")))


def test_a_cut_off_first_download_is_never_pinned(G, server, generator_bytes):
    """The connection drops halfway: the download fails, nothing is kept, and a retry succeeds."""
    path = unhashed(server, generator_bytes, mode="truncate")
    with pytest.raises(ConnectionError, match=r"stopped after [\d,]+ of [\d,]+ bytes.*try again"):
        load_generator("remote", device="cpu")
    assert not path.exists() and not hub._pin_path(path).exists() and leftovers(path.parent) == []
    server.routes["/remote.pt"] = ("full", generator_bytes)
    assert load_generator("remote", device="cpu").cfg == G.cfg
    assert hub._pin_path(path).read_text().strip() == sha(generator_bytes)


def test_a_first_download_that_does_not_load_is_deleted_not_pinned(G, server, generator_bytes):
    """Complete as announced but not a loadable file: refused, deleted, never pinned; a retry succeeds."""
    path = unhashed(server, generator_bytes[: len(generator_bytes) // 2])
    with pytest.raises(ValueError, match="not a plain-tensor torch file"):
        load_generator("remote", device="cpu")
    assert not path.exists() and not hub._pin_path(path).exists()
    server.routes["/remote.pt"] = ("full", generator_bytes)
    assert load_generator("remote", device="cpu").cfg == G.cfg
    assert server.hits["/remote.pt"] == 2


def test_the_pin_is_named_in_the_errors(server, generator_bytes):
    path = unhashed(server, generator_bytes)
    load_generator("remote", device="cpu")
    pin = hub._pin_path(path)
    path.write_bytes(generator_bytes + b"\0")  # the cached file changed
    with pytest.raises(ValueError, match=re.escape(str(pin))):
        load_generator("remote", device="cpu")
    path.unlink()  # upstream now serves another file: the pin refuses it, and the error says how to accept it
    server.routes["/remote.pt"] = ("full", generator_bytes + b"\0")
    with pytest.raises(ValueError, match=f"changed upstream.*delete its pin {re.escape(str(pin))}"):
        load_generator("remote", device="cpu")


def test_a_wrong_file_from_the_server_is_refused(server):
    server.routes["/w.pt"] = ("full", PAYLOAD + b"x")
    register(WeightSpec(name="hashed", filename="w.pt", sha256=sha(PAYLOAD), url=server.url("/w.pt")))
    with pytest.raises(ValueError, match="changed upstream or the transfer was corrupted"):
        weights_path("hashed")
    assert list(hub.cache_dir().iterdir()) == []


@pytest.mark.parametrize("mode", ["stall", "stall-body"])
def test_a_silent_server_times_out(server, monkeypatch, mode):
    monkeypatch.setattr(hub, "DOWNLOAD_TIMEOUT", 0.5)
    server.routes["/w.pt"] = (mode, PAYLOAD)
    register(WeightSpec(name="slow", filename="w.pt", sha256=sha(PAYLOAD), url=server.url("/w.pt")))
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="timed out"):
        weights_path("slow")
    assert time.monotonic() - start < 5
    assert list(hub.cache_dir().iterdir()) == []


ROUNDS = 100  # before the fix about 1 call in 300 failed (the pin was read while being written)


def test_eight_threads_first_using_an_unpinned_file(server, tmp_path):
    """ROUNDS rounds: eight threads load the same unpinned file at once from an empty cache."""
    data = atomic_torch_save({"format": "test/1", "x": torch.arange(1000.0)}, tmp_path / "c.pt").read_bytes()
    path = unhashed(server, data)
    pin, barrier, failures = hub._pin_path(path), threading.Barrier(8, timeout=60), []

    def use():
        for _ in range(ROUNDS):
            barrier.wait()
            try:
                hub.load_checkpoint("remote", fmt="test/1", what="a test file", fix="-")
                if pin.read_text().strip() != sha(data):
                    failures.append(f"pin {pin.read_text()!r}")
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                failures.append(repr(e))
            if barrier.wait() == 0:  # one thread empties the cache for the next round
                path.unlink()
                pin.unlink()
            barrier.wait()

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert failures == [], f"{len(failures)} of {8 * ROUNDS} calls failed, e.g. {failures[0]}"
    assert server.hits["/remote.pt"] >= ROUNDS
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("kind", ["a file", "under a file", "read-only"])
def test_an_unusable_facelab_home_is_named_not_blamed_on_the_network(kind, server, tmp_path, monkeypatch):
    server.routes["/w.pt"] = ("full", PAYLOAD)
    register(WeightSpec(name="remote", filename="w.pt", sha256=sha(PAYLOAD), url=server.url("/w.pt")))
    home = tmp_path / "home"
    if kind == "a file":
        home.write_text("not a folder")
    elif kind == "under a file":
        (tmp_path / "plain").write_text("not a folder")
        home = tmp_path / "plain" / "home"
    else:
        (home / "weights").mkdir(parents=True)
        if os.geteuid() == 0:  # root writes through permissions: make the writes fail as on a read-only disk
            real_open = open
            import facelab.utils  # where the cache's files are created (utils.atomic_file)
            monkeypatch.setattr(facelab.utils, "open", lambda f, mode="r", *a, **k: (_ for _ in ()).throw(
                PermissionError(errno.EROFS, "Read-only file system", str(f))) if "x" in mode else
                real_open(f, mode, *a, **k), raising=False)
        else:
            (home / "weights").chmod(0o555)
    monkeypatch.setenv("FACELAB_HOME", str(home))
    with pytest.raises(OSError) as e:
        weights_path("remote")
    message = str(e.value)
    assert not isinstance(e.value, ConnectionError) and "internet" not in message and "\n" not in message
    assert f"FACELAB_HOME={home}" in message and "writable folder" in message
    assert ("is a file, not a folder" in message) == (kind != "read-only")
    assert server.hits["/w.pt"] == 0 or kind == "read-only"
    if kind == "read-only" and os.geteuid() != 0:
        (home / "weights").chmod(0o755)


def test_a_missing_facelab_home_is_created(server, tmp_path, monkeypatch):
    server.routes["/w.pt"] = ("full", PAYLOAD)
    register(WeightSpec(name="remote", filename="w.pt", sha256=sha(PAYLOAD), url=server.url("/w.pt")))
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "not" / "yet"))
    assert weights_path("remote").read_bytes() == PAYLOAD


def test_cached_files_are_readable_by_others(server, generator_bytes, tmp_path):
    old = os.umask(0o022)
    try:
        path = unhashed(server, generator_bytes)
        load_generator("remote", device="cpu")
        saved = atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "saved.pt")
        for p in (path, hub._pin_path(path), saved):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    finally:
        os.umask(old)


def test_stale_part_files_are_removed_and_live_ones_kept(tmp_path):
    stale, live = tmp_path / "w.pt.999-dead.part", tmp_path / "w.pt.998-busy.part"
    stale.write_bytes(b"left by a killed download")
    live.write_bytes(b"another download, still running")
    old = time.time() - 2 * hub.STALE_PART_SECONDS
    os.utime(stale, (old, old))
    download("https://example.invalid/w.pt", tmp_path / "w.pt", sha256=sha(PAYLOAD), opener=FakeOpener(PAYLOAD))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt", live.name]


# ---------------------------------------------------------------------------------------------
# Files named by path, and files that were altered


@pytest.mark.parametrize("filename", ["g.ckpt", "g.bin", "generator"])
def test_a_string_naming_an_existing_file_is_a_path(G, tmp_path, filename):
    path = export_generator(G, tmp_path / filename)
    assert load_generator(str(path), device="cpu").cfg == G.cfg


def test_an_altered_generator_file_is_a_one_line_error(G, tmp_path):
    ckpt = load_file(export_generator(G, tmp_path / "g.pt"))
    cases = {
        "bigger.pt": ({**ckpt, "config": {**ckpt["config"], "channel_max": 64}}, r"other shapes: .* vs "),
        "no_weights.pt": ({k: v for k, v in ckpt.items() if k != "state_dict"}, r"incomplete .*without state_dict"),
        "no_config.pt": ({k: v for k, v in ckpt.items() if k != "config"}, r"incomplete .*without config"),
        "bad_config.pt": ({**ckpt, "config": {**ckpt["config"], "depth": 3}}, r"config is not valid"),
        "missing_key.pt": ({**ckpt, "state_dict": dict(list(ckpt["state_dict"].items())[1:])}, r"missing "),
        "nan.pt": ({**ckpt, "state_dict": {**ckpt["state_dict"], "synthesis.b4.const":
                                           torch.full_like(ckpt["state_dict"]["synthesis.b4.const"], float("nan"))}},
                   r"NaN in synthesis\.b4\.const"),
        "inf.pt": ({**ckpt, "state_dict": {**ckpt["state_dict"], "synthesis.b8.conv0.weight":
                                           torch.full_like(ckpt["state_dict"]["synthesis.b8.conv0.weight"],
                                                           float("inf"))}},
                   r"Inf in synthesis\.b8\.conv0\.weight"),  # every output would be non-finite
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=message) as e:
            load_generator(tmp_path / name, device="cpu")
        assert "\n" not in str(e.value) and "export" in str(e.value), name
