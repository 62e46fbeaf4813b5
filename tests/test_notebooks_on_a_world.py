"""Every notebook runs top to bottom on another world (issue #18: the world is one parameter).

``make test-worlds`` builds the small ``mini32`` world and runs this file with
``FACELAB_TEST_WORLD=mini32`` and ``FACELAB_TEST_WORLD_HOME`` set to where it was built. mini32 is
world64 cut at 32 px (``facelab.nets.stylegan2.lower_resolution``: another resolution and another
number of W+ codes, 8 instead of 10, with no training, so its faces are real faces that the teacher's
detector finds), with its H, boundaries, mapper and encoder built by ``python -m facelab.train.build``
at a small N. Execution only: each notebook must finish
without an error and print its claims table; the numbers and verdicts of such a briefly trained
world mean nothing and are not compared. Without ``FACELAB_TEST_WORLD`` (``make test``) it is skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WORLD = os.environ.get("FACELAB_TEST_WORLD")
VERDICTS = ("holds", "does not hold", "inconclusive")

pytestmark = pytest.mark.skipif(not WORLD, reason="set FACELAB_TEST_WORLD (make test-worlds)")


def _texts(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append("".join(o.get("text", "")))
            out.extend("".join(o.get("data", {}).get(k, "")) for k in ("text/plain", "text/markdown"))
    return "\n".join(out)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs_on_another_world(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FACELAB_WORLD", WORLD)
    if os.environ.get("FACELAB_TEST_WORLD_HOME"):
        monkeypatch.setenv("FACELAB_HOME", os.environ["FACELAB_TEST_WORLD_HOME"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    text = _texts(nb)
    assert any(v in text for v in VERDICTS), f"{path.name} ran on {WORLD!r} but printed no claims verdict"
