"""How a cost grows with the table: the figures and the table `bench.history` and
`bench.transform` print (one operation per row, one size per column, the ratio of the
largest size to the smallest against a target)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ops.folder_store import FolderStore


@dataclass(frozen=True)
class Figure:
    seconds: float
    requests: int
    bytes_read: int
    bytes_written: int


def sizes_and_repeat(
    argv: list[str] | None, description: str, quick: tuple[int, ...], full: tuple[int, ...]
) -> tuple[tuple[int, ...], int]:
    """The command line of a curve's bench: `--quick` runs the `quick` sizes once."""
    parser = argparse.ArgumentParser(description=description)
    quick_help = "N = " + " and ".join(f"{n:,}" for n in quick) + ", once"
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    return (quick, 1) if args.quick else (full, args.repeat)


def measure(store: FolderStore, work: Callable[[], Any]) -> Figure:
    """`work`'s time and the store's traffic while it ran."""
    traffic = store.traffic
    traffic.requests = traffic.bytes_read = traffic.bytes_written = 0
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    return Figure(seconds, traffic.requests, traffic.bytes_read, traffic.bytes_written)


def median(figures: list[Figure]) -> Figure:
    """The median time, with the traffic of the run nearest it."""
    middle = sorted(figures, key=lambda f: f.seconds)[len(figures) // 2]
    return Figure(
        statistics.median(f.seconds for f in figures),
        middle.requests,
        middle.bytes_read,
        middle.bytes_written,
    )


def print_curve(
    results: Mapping[int, Mapping[str, Figure]],
    rows: Iterable[str],
    *,
    first_column: str,
    unit: str,
    cell: Callable[[Figure], str],
    targeted: Iterable[str],
    target: float,
) -> bool:
    """Print one row per operation (`-` where a size did not run it); True when every
    `targeted` operation at the largest size took at most `target` times the smallest's."""
    sizes = sorted(results)
    targeted = set(targeted)
    head = " | ".join(f"N={n:,} {unit}" for n in sizes)
    print(f"\n| {first_column} | {head} | {sizes[-1]:,} / {sizes[0]:,} | target |")
    print("|---|" + "---|" * (len(sizes) + 2))
    met = True
    for name in rows:
        cells = [cell(results[n][name]) if name in results[n] else "-" for n in sizes]
        first, last = results[sizes[0]].get(name), results[sizes[-1]].get(name)
        ratio = f"{last.seconds / first.seconds:.2f}x" if first and last else "-"
        verdict = "-"
        if name in targeted and first and last:
            ok = last.seconds <= target * first.seconds
            met &= ok
            verdict = "met" if ok else "not met"
        print(f"| {name} | {' | '.join(cells)} | {ratio} | {verdict} |")
    return met
