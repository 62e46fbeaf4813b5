"""Claims tables for the notebooks: verdicts that nbval checks, numbers that it shows.

A claim is ``(statement, measured, holds)``: the paper's statement, what this run measured (a
string with the numbers), and the verdict (a bool). The numbers depend on the CPU, the thread count
and the kernels in use (float rounding differs between machines, and long optimisations amplify
it), so a notebook prints the verdicts in a ``# NBVAL_CHECK_OUTPUT`` cell with :func:`verdicts` and
shows the numbers in an unchecked cell with :func:`table`. ``make test-repro`` runs the notebooks
with other numerics and ``tests/notebook_spread.py`` reports how far each printed number moved.
"""
from __future__ import annotations

Claim = tuple  # (statement: str, measured: str, holds: bool)


def _verdict(holds) -> str:
    return "yes" if holds else "NO"


def verdicts(claims: list[Claim]) -> str:
    """One ``yes | statement`` / ``NO  | statement`` line per claim: what a checked cell prints."""
    return "\n".join(f"{_verdict(ok):3s} | {statement}" for statement, _, ok in claims)


def table(claims: list[Claim]):
    """The claims with their measured numbers as a Markdown table (an IPython ``Markdown`` object
    when IPython is available, else the Markdown text). Show it in an *unchecked* cell."""
    text = "| claim | measured here | holds? |\n|---|---|---|\n" + "\n".join(
        f"| {_escape(statement)} | {_escape(measured)} | {_verdict(ok)} |" for statement, measured, ok in claims)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - IPython ships with the notebooks extra
        return text
    return Markdown(text)


def _escape(cell: str) -> str:
    return str(cell).replace("|", "\\|")
