"""bench.curve: the growth table's ratio and verdict, and the median's traffic."""

from bench.curve import Figure, median, print_curve


def _f(seconds: float, requests: int = 1) -> Figure:
    return Figure(seconds, requests, 0, 0)


def _print(capsys, results):
    met = print_curve(
        results,
        ("asof", "scan"),
        first_column="operation",
        unit="s",
        cell=lambda f: f"{f.seconds:.1f}",
        targeted=("asof",),
        target=1.5,
    )
    return met, capsys.readouterr().out


def test_a_targeted_row_within_the_target_is_met_and_a_missing_size_prints_a_dash(capsys):
    results = {100: {"asof": _f(1.0), "scan": _f(2.0)}, 1000: {"asof": _f(1.5)}}
    met, printed = _print(capsys, results)
    assert met
    assert "| operation | N=100 s | N=1,000 s | 1,000 / 100 | target |" in printed
    assert "| asof | 1.0 | 1.5 | 1.50x | met |" in printed
    assert "| scan | 2.0 | - | - | - |" in printed


def test_a_targeted_row_past_the_target_is_not_met(capsys):
    met, printed = _print(capsys, {100: {"asof": _f(1.0)}, 1000: {"asof": _f(1.6)}})
    assert not met
    assert "| asof | 1.0 | 1.6 | 1.60x | not met |" in printed


def test_the_median_takes_the_traffic_of_the_middle_run():
    runs = [_f(3.0, requests=30), _f(1.0, requests=10), _f(2.0, requests=20)]
    assert median(runs) == Figure(2.0, 20, 0, 0)
