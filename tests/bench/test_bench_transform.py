"""`make bench`'s transform cases at 1,000 and 5,000 orders: they run and print every figure.

The 1.5x target is checked by `make bench` at 10,000 / 1,000,000 fact rows, not here."""

import os

import pytest

from bench import transform as bench


@pytest.mark.xdist_group("bench")
def test_the_transform_cases_run_and_print_their_table(capsys):
    before = dict(os.environ)
    assert bench.main(["--quick"]) == 0
    assert dict(os.environ) == before, "the bench leaves the process's environment as it was"
    printed = capsys.readouterr().out
    assert "| case | N=1,000 s (requests, MB read/written) | N=5,000 s" in printed
    for name in ("event", "rebuild"):
        assert f"| {name} | " in printed
    assert "target (one event within 1.5x)" in printed
