"""`make bench` at N=10k: every tool runs in its own process and the table comes out.

The targets are checked by `make bench` at full size, not here (timings on a shared CI
machine prove nothing); this proves the benchmark itself works."""

import json

import pytest

from bench import merge as bench


@pytest.mark.xdist_group("bench")
def test_the_benchmark_runs_every_tool_at_small_size(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench.main(["--small", "--repeat", "1", "--out", str(out), "--data", str(tmp_path)]) == 0
    results = json.loads(out.read_text())
    assert {(r["case"], r["tool"]) for r in results} == {
        (case.name, tool) for case in bench.SMALL_CASES for tool in bench.TOOLS
    }
    for r in results:
        assert r["median_s"] > 0
        assert r["peak_rss_mb"] > 0
        assert set(r) >= {
            "case",
            "tool",
            "n",
            "k",
            "shape",
            "median_s",
            "peak_rss_mb",
            "s3_requests",
        }
        if r["tool"].startswith("project"):
            assert r["s3_requests"] > 0
            assert r["bytes_written"] > 0
    project = [r for r in results if r["tool"].startswith("project")]
    # the same merge through both stores makes the same requests
    by_case: dict[str, set[int]] = {}
    for r in project:
        by_case.setdefault(r["case"], set()).add(r["s3_requests"])
    assert all(len(counts) == 1 for counts in by_case.values()), by_case
    printed = capsys.readouterr().out
    assert "| case | tool | median s | peak RSS MB | S3 requests" in printed
    assert "cold start: import services.merge.handler" in printed
