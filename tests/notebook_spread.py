"""How far the numbers a notebook prints move under other numerics.

    python tests/notebook_spread.py build/repro/*      # the records of make test / make test-repro

Each argument is a folder of records written by the repository's ``conftest.py`` (environment
variable ``FACELAB_NB_RECORD``) during an nbval run. For every code cell of every notebook, the
numbers in its text outputs are compared with the committed outputs, position by position; the
table lists each cell whose numbers moved in any run, with the largest change and the coarsest
rounding that would hide it. A checked (``# NBVAL_CHECK_OUTPUT``) cell should never appear.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from conftest import cell_texts  # noqa: E402

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def numbers(texts: list[str]) -> list[float]:
    return [float(x) for x in NUMBER.findall("\n".join(texts))]


def committed(notebook: Path) -> list[list[str]]:
    cells = json.loads(notebook.read_text())["cells"]
    return [cell_texts(c.get("outputs")) for c in cells if c["cell_type"] == "code"]


def spread(runs: list[Path]) -> tuple[list[tuple], int]:
    """Rows (notebook, cell, checked, n numbers, max |change|, runs) and the count of checked cells that moved."""
    rows, checked_moved = [], 0
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        base = committed(nb)
        moved: dict[int, dict] = {}
        for run in runs:
            path = run / f"{nb.stem}.jsonl"
            if not path.exists():
                continue
            for rec in map(json.loads, path.read_text().splitlines()):
                a, b = numbers(base[rec["cell"]]), numbers(rec["outputs"])
                if a == b:
                    continue
                delta = max((abs(x - y) for x, y in zip(a, b)), default=math.inf) if len(a) == len(b) else math.inf
                row = moved.setdefault(rec["cell"], {"checked": rec["checked"], "n": len(a), "delta": 0.0, "runs": []})
                row["delta"] = max(row["delta"], delta)
                row["runs"].append(run.name)
        for cell, r in sorted(moved.items()):
            rows.append((nb.stem, cell, r["checked"], r["n"], r["delta"], ",".join(r["runs"])))
            checked_moved += r["checked"]
    return rows, checked_moved


def main(argv: list[str]) -> int:
    runs = [Path(a) for a in argv if Path(a).is_dir()]
    if not runs:
        print("usage: python tests/notebook_spread.py RECORD_DIR [RECORD_DIR ...]  (see make test-repro)")
        return 2
    rows, checked_moved = spread(runs)
    print(f"notebook outputs vs the committed copy, runs: {', '.join(r.name for r in runs)}")
    print("| notebook | code cell | checked | numbers | max abs change | runs |")
    print("|---|---|---|---|---|---|")
    for nb, cell, checked, n, delta, names in rows:
        shown = "text differs" if math.isinf(delta) else f"{delta:.3g}"
        print(f"| {nb} | {cell} | {'yes' if checked else 'no'} | {n} | {shown} | {names} |")
    print(f"{len(rows)} unchecked or checked cells moved; checked cells that moved: {checked_moved}")
    return 1 if checked_moved else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
