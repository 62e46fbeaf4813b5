"""Repository-wide pytest hook: record what every notebook cell printed under nbval.

With ``FACELAB_NB_RECORD=DIR`` set, each notebook cell that nbval executes appends one JSON line
to ``DIR/<notebook>.jsonl``: its index among the code cells, whether nbval checks its output, and
its text outputs. ``tests/notebook_spread.py`` compares such records across runs with different
numerics (``make test`` and ``make test-repro`` write them under ``build/repro/``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def cell_texts(outputs) -> list[str]:
    """The text of a cell's outputs (streams, plain text, Markdown), images left out."""
    texts = []
    for out in outputs or []:
        if "text" in out:
            texts.append("".join(out["text"]))
        for key in ("text/plain", "text/markdown"):
            if key in out.get("data", {}):
                texts.append("".join(out["data"][key]))
    return texts


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    record = os.environ.get("FACELAB_NB_RECORD")
    if not record or call.when != "call" or getattr(item, "test_outputs", None) is None:
        return
    path = Path(record) / (Path(str(item.fspath)).stem + ".jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"cell": item.cell_num, "checked": bool(item.options.get("check")), "outputs": cell_texts(item.test_outputs)}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
