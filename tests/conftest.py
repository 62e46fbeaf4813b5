"""Shared fixtures: tiny seeded networks and an isolated FACELAB_HOME."""
from __future__ import annotations

import functools
import socket

import pytest
import torch

from facelab.nets.stylegan2 import Discriminator, Generator, get_config


@pytest.fixture(autouse=True)
def facelab_home(tmp_path, monkeypatch):
    """Every test gets its own empty weight cache."""
    home = tmp_path / "facelab_home"
    monkeypatch.setenv("FACELAB_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def cpu_by_default(monkeypatch):
    """``device=None`` means ``get_device()``: unit tests run on the CPU unless they name a device
    (the tests of get_device itself set or delete FACELAB_DEVICE as they need)."""
    monkeypatch.setenv("FACELAB_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def quick_h_timing(monkeypatch):
    """H's fit times H for its card, ten passes of 64 images each way (seconds on a CPU, in every fit a
    test runs); under the tests, two passes of 4 images through the same function."""
    import facelab.train.regressor as tr
    monkeypatch.setattr(tr, "cpu_speed", functools.partial(tr.cpu_speed, batch=4, repeats=2))


@pytest.fixture
def foreground():
    """Ctrl-C reaches the test as it reaches a run in a terminal (a shell's background job, pytest under
    nohup or CI, ignores SIGINT); restored afterwards."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def tiny_cfg():
    return get_config("tiny")  # 32 px, num_ws 8, w_dim 32


@pytest.fixture
def G(tiny_cfg):
    """A tiny generator (seeded) in eval mode, with non-zero noise strengths and w_avg so that
    noise and truncation visibly act (both are zero in a freshly initialised StyleGAN2)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = Generator(tiny_cfg)
        with torch.no_grad():
            for layer in g.synthesis.layers():
                layer.noise_strength.fill_(0.5)
            g.mapping.w_avg.copy_(torch.randn(g.w_dim))
    return g.eval()


@pytest.fixture
def D(tiny_cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        d = Discriminator(tiny_cfg)
    return d.eval()


@pytest.fixture
def offline_ffhq(monkeypatch) -> str:
    """FACELAB_FFHQ_URL on a local port nothing listens on: the network is "down". Returns the URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ffhq.pkl"
    monkeypatch.setenv("FACELAB_FFHQ_URL", url)
    return url
