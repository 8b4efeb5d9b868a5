"""`python -m tests.reliability [--scenarios N] [--seed S] [--quick] [--only N,...]`: prints
the summary table; exits 1 unless rows lost = rows duplicated = objects changed by a replay = 0
and every case was handled as expected. A failing fault scenario is named by seed and number:
`--seed S --scenarios N --only K` runs scenario K alone, as it ran in the suite."""

from __future__ import annotations

import argparse
import sys

from tests.reliability.suite import Params, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--scenarios", type=int, default=None, help="seeded fault scenarios")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes (as in make test)")
    parser.add_argument(
        "--load-versions", type=int, default=None, help="staging versions per table"
    )
    parser.add_argument("--soak-rows", type=int, default=None, help="rows of the soak's table")
    parser.add_argument("--soak-merges", type=int, default=None, help="files the soak merges")
    parser.add_argument(
        "--only", default=None, help="comma-separated fault scenario numbers to run alone"
    )
    args = parser.parse_args(argv)
    params = Params.quick_form(args.seed) if args.quick else Params(seed=args.seed)
    if args.scenarios is not None:
        params.scenarios = args.scenarios
    if args.load_versions is not None:
        params.load_versions = args.load_versions
    if args.soak_rows is not None:
        params.soak_rows = args.soak_rows
    if args.soak_merges is not None:
        params.soak_merges = args.soak_merges
    if args.only:
        params.only = frozenset(int(n) for n in args.only.split(","))
    summary = run_suite(params, progress=True)
    for failure in summary.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(summary.table())
    return 0 if summary.ok else 1


if __name__ == "__main__":  # the local runtime's function processes re-import this module
    sys.exit(main())
