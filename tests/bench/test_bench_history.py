"""`make bench`'s history cases at N = 100 and 1,000: they run and print every figure.

The 1.5x target is checked by `make bench` at 100 / 10,000 / 100,000 objects, not here."""

import pytest

from bench import history as bench


@pytest.mark.xdist_group("bench")
def test_the_history_cases_run_and_print_their_table(capsys):
    assert bench.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    assert "| operation | N=100 s (requests) | N=1,000 s (requests) |" in printed
    for name in (*bench.OPERATIONS, "checkpoint", "scan"):
        assert f"| {name} | " in printed
    assert "target (history-reading operations within 1.5x)" in printed
