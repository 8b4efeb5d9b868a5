"""`make bench`'s history-index case in its quick form: it runs and prints every figure.

The target (a checkpoint within 1.5x as history grows) is `make bench`'s, at 1,000,000 keys."""

import pytest

from bench import index as bench


@pytest.mark.xdist_group("bench")
def test_the_index_case_runs_and_prints_its_tables(capsys):
    assert bench.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    assert "| step | N=2,560 s (requests) | N=10,240 s (requests) |" in printed
    assert "| checkpoint (mean) | " in printed
    assert "| checkpoint (slowest) | " in printed
    rows = [line for line in printed.splitlines() if line.startswith(("| 2,560 |", "| 10,240 |"))]
    assert len(rows) == 2, printed
    # a checkpoint writes at least the history rows it adds (written / added >= 1)
    assert all(int(row.split("|")[6].strip().rstrip("x")) >= 1 for row in rows), rows
    assert "target (a checkpoint within 1.5x as history grows)" in printed
