"""The README's "Using the library" walk runs as written: a reader's first contact with the API.

Its code blocks are executed in order, in one namespace, in a scratch folder where ``me.jpg`` is the
Grace Hopper portrait (the walk's photo); the only change is the device, the CPU. A renamed
function, a changed default or a loader that stops finding its weights fails here before a reader
finds it.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from facelab.photos import sample_photos

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str) -> list[str]:
    """The ```python blocks of the README section headed ``## title``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def test_the_library_walk_runs_as_written(tmp_path, monkeypatch):
    blocks = section_code("Using the library")
    assert len(blocks) == 2, "the section's two code blocks: sampling faces, and a photo's path"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACELAB_DEVICE", "cpu")
    sample_photos()["grace_hopper"].image.save("me.jpg")
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), scope)  # noqa: S102 - our own README
    assert Path("faces.png").is_file() and Path("me_pti.pt").is_file()
    for name in ("older", "both"):
        assert scope[name].shape == (1, 3, 64, 64) and torch.isfinite(scope[name]).all(), name
    assert scope["res"].pivots.shape == (1, 10, 128)

