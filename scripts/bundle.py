"""Build the Lambda code asset without Docker: runtime wheels for Lambda's platform + our code.

`pip install --platform ... --only-binary=:all:` fetches the manylinux aarch64 wheels for the
Lambda Python version (pinned by constraints.txt) into the bundle folder, then `shared/` and
`services/` are copied beside them. Every function uses this one folder as its code asset.

    python scripts/bundle.py [--out .lambda-bundle]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "services")
# Must match infra/constants.py LAMBDA_RUNTIME / LAMBDA_PYTHON_VERSION (a test checks it).
LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_PLATFORM = "manylinux2014_aarch64"


def runtime_requirements(pyproject: Path) -> list[str]:
    """The `[project] dependencies` of pyproject.toml: what a Lambda carries."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return list(project["dependencies"])


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


def copy_sources(out: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, out / package, ignore=ignore, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / ".lambda-bundle")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    requirements = runtime_requirements(ROOT / "pyproject.toml")
    subprocess.run(pip_command(out, requirements, ROOT / "constraints.txt"), check=True)
    copy_sources(out)
    print(f"bundle: {out} ({', '.join(requirements)} + {', '.join(PACKAGES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
