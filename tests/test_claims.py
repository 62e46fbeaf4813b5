"""Claims tables: verdict lines for checked cells, Markdown tables for the numbers."""
from __future__ import annotations

from facelab import claims


def test_verdicts_print_only_the_verdict_and_the_statement():
    rows = [("W+ is closer", "W 1.61 vs W+ 1.23", True), ("W is less entangled", "1.88 vs 1.80", False)]
    assert claims.verdicts(rows) == "yes | W+ is closer\nNO  | W is less entangled"


def test_the_table_carries_the_numbers_and_escapes_pipes():
    table = claims.table([("a|b", "1.5 | 2.5", True)])
    text = getattr(table, "data", table)
    assert text.splitlines()[2] == "| a\\|b | 1.5 \\| 2.5 | yes |"
