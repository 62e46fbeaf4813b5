"""How far the numbers a notebook prints move under other numerics.

    python tests/notebook_spread.py build/repro/*      # the records of make test / make test-repro

Each argument is a folder of records written by the repository's ``conftest.py`` (environment
variable ``FACELAB_NB_RECORD``) during an nbval run. For every code cell of every notebook, the
numbers in its text outputs are compared with the committed outputs, position by position; the
table lists each cell whose numbers moved in any run, with the largest change and the coarsest
rounding that would hide it. A checked (``# NBVAL_CHECK_OUTPUT``) cell should never appear.

A second table lists the checked verdicts nearest their bound (a ``holds`` or ``does not hold`` that
a checked cell prints, read from the claims table beside it): the distance from the bound to the
nearer end of the decisive interval, in widths of that interval, and the largest move of its ends
in any run, in the same unit. A verdict flips on a machine where its ends move further than its
margin; the runs here show how far other numerics move them.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repository's conftest.py, by path: under pytest the name "conftest" is tests/conftest.py.
_spec = importlib.util.spec_from_file_location("facelab_root_conftest", ROOT / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
cell_texts = _root_conftest.cell_texts

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_VALUE = r"-?(?:\d+(?:\.\d+)?(?:e[-+]?\d+)?|inf)"
INTERVAL = re.compile(rf"{_VALUE} \[({_VALUE}), ({_VALUE})\]")  # fl.claims' "value [low, high]"
RULE = re.compile(r"([<>]) (baseline(?: \(paired\))?|\S+)(?: ([+−]) (\S+))?")  # fl.claims' rule column
VERDICT = re.compile(r"(holds|does not hold)\s*\| (.+)")  # a line of fl.claims.verdicts


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


def decided_rows(texts: list[str]) -> dict[str, tuple[float, float, float]]:
    """``{claim: (low, high, bound)}`` for each row of a claims table (``fl.claims.table``) in ``texts``
    with a rule and a bold verdict: the interval the verdict was decided on (the tested difference
    for a claim against a baseline) and the bound it was compared with."""
    rows = {}
    for line in "\n".join(texts).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 6 or not cells[5].startswith("**") or not (rule := RULE.fullmatch(cells[4])):
            continue
        ends = INTERVAL.findall(cells[2])
        if not ends:
            continue
        shift = 0.0 if rule[3] is None else float(rule[4]) * (1 if rule[3] == "+" else -1)
        against_baseline = rule[2].startswith("baseline")
        low, high = (float(x) for x in ends[-1 if against_baseline else 0])
        rows[cells[0]] = (low, high, shift if against_baseline else float(rule[2]) + shift)
    return rows


def margins(runs: list[Path]) -> list[tuple]:
    """Rows (notebook, verdict, statement, margin, largest move) for every checked verdict with a
    number behind it; margin and move in widths of the verdict's interval."""
    out = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        texts = [cell_texts(c.get("outputs")) for c in cells]
        checked = [m.groups() for c, t in zip(cells, texts) if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])
                   for m in map(VERDICT.fullmatch, "\n".join(t).splitlines()) if m]
        tables = {i: decided_rows(t) for i, t in enumerate(texts)}
        records = [list(map(json.loads, (run / f"{nb.stem}.jsonl").read_text().splitlines()))
                   for run in runs if (run / f"{nb.stem}.jsonl").exists()]
        for verdict, statement in checked:
            found = [(i, claim, row) for i, rows in tables.items() for claim, row in rows.items()
                     if claim == statement or claim.startswith(statement + " (")]
            if not found:
                continue
            i, claim, (low, high, bound) = found[0]
            width = high - low
            if not (math.isfinite(width) and width > 0):
                continue
            moves = [max(abs(low - r[0]), abs(high - r[1])) / width for rec in records for c in rec
                     if c["cell"] == i and (r := decided_rows(c["outputs"]).get(claim))]
            out.append((nb.stem, verdict, statement, min(abs(low - bound), abs(high - bound)) / width,
                        max(moves, default=math.nan)))
    return sorted(out, key=lambda r: r[3])


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
    near = margins(runs)
    print("\nchecked verdicts nearest their bound (margin: bound to the nearer end of the interval; move: the "
          "largest of its ends in these runs; both in widths of the interval):")
    print("| notebook | verdict | claim | margin | largest move |")
    print("|---|---|---|---|---|")
    for nb, verdict, statement, margin, move in near[:8]:
        print(f"| {nb} | {verdict} | {statement} | {margin:.2f} | {move:.2f} |")
    return 1 if checked_moved else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
