"""Build the Lambda code assets without Docker: runtime wheels for Lambda's platform + our code.

`pip install --platform ... --only-binary=:all:` fetches the manylinux aarch64 wheels for the
Lambda Python version (pinned by constraints.txt) into the bundle folder, then `shared/` and
`services/` are copied beside them. Two bundles:

- `base` (`.lambda-bundle`): the `[project] dependencies`; every merge, ingest and pause
  function uses it. It leaves `services/transform/` out.
- `transform` (`.lambda-bundle-transform`): the same plus the `transform` extra (pyarrow,
  ~150 MB unzipped), for the transform function alone, so the merges stay small.

    python scripts/bundle.py [--bundle base|transform] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "services")
# Must match infra/constants.py LAMBDA_RUNTIME / LAMBDA_PYTHON_VERSION (a test checks it).
LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_PLATFORM = "manylinux2014_aarch64"
# Python 3.12+ Lambda runs on Amazon Linux 2023 (glibc 2.34): newer wheels (pyarrow's) are
# tagged manylinux_2_28 only, and pip takes no tag newer than the ones it is given.
EXTRA_PLATFORMS = ("manylinux_2_28_aarch64",)
# Lambda's limit on a function's unzipped code (layers included).
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    name: str
    out: Path
    extras: tuple[str, ...]  # optional-dependency groups carried besides the runtime ones
    excluded: tuple[str, ...]  # source folders (relative to the root) left out


BUNDLES = {
    "base": Bundle("base", ROOT / ".lambda-bundle", (), ("services/transform",)),
    "transform": Bundle("transform", ROOT / ".lambda-bundle-transform", ("transform",), ()),
}


def runtime_requirements(pyproject: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """The `[project] dependencies` of pyproject.toml (what a Lambda carries), plus extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return requirements


def pip_command(out: Path, requirements: list[str], constraints: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--platform",
        LAMBDA_PLATFORM,
        *(arg for platform in EXTRA_PLATFORMS for arg in ("--platform", platform)),
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--target",
        str(out),
        "--constraint",
        str(constraints),
        *requirements,
    ]


def copy_sources(out: Path, excluded: tuple[str, ...] = ()) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, out / package, ignore=ignore, dirs_exist_ok=True)
    for folder in excluded:
        shutil.rmtree(out / folder, ignore_errors=True)


def tree_size(folder: Path) -> int:
    """Bytes of every file under `folder`: what Lambda counts as the unzipped size."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def build(bundle: Bundle, out: Path | None = None) -> Path:
    out = out or bundle.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    requirements = runtime_requirements(ROOT / "pyproject.toml", bundle.extras)
    subprocess.run(pip_command(out, requirements, ROOT / "constraints.txt"), check=True)
    copy_sources(out, bundle.excluded)
    size = tree_size(out)
    if size > LAMBDA_UNZIPPED_LIMIT_BYTES:
        raise SystemExit(f"bundle {out} is {size / 2**20:.0f} MB unzipped: over Lambda's 250 MB")
    print(
        f"bundle {bundle.name}: {out} ({size / 2**20:.0f} MB; "
        f"{', '.join(requirements)} + {', '.join(PACKAGES)})"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bundle", choices=sorted(BUNDLES), default="base")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    build(BUNDLES[args.bundle], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
