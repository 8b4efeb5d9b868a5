"""`make bundle`: wheels for Lambda's platform and Python version, plus our packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from infra import constants

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

ROOT = Path(__file__).resolve().parents[2]


def load_bundle_script():
    spec = importlib.util.spec_from_file_location("bundle", ROOT / "scripts" / "bundle.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundle_targets_the_functions_runtime_and_architecture():
    bundle = load_bundle_script()
    assert constants.LAMBDA_RUNTIME.name == f"python{bundle.LAMBDA_PYTHON_VERSION}"
    assert constants.LAMBDA_PYTHON_VERSION == bundle.LAMBDA_PYTHON_VERSION
    assert constants.LAMBDA_ARCHITECTURE.name == "arm64"
    command = bundle.pip_command(Path("out"), ["pydantic>=2"], Path("constraints.txt"))
    assert command[command.index("--platform") + 1] == "manylinux2014_aarch64"
    assert command[command.index("--python-version") + 1] == bundle.LAMBDA_PYTHON_VERSION
    assert "--only-binary=:all:" in command
    assert command[command.index("--constraint") + 1] == "constraints.txt"


def test_bundle_carries_the_runtime_dependencies_only():
    bundle = load_bundle_script()
    requirements = bundle.runtime_requirements(ROOT / "pyproject.toml")
    names = {r.split(">")[0].split("=")[0] for r in requirements}
    assert {"pydantic", "aws-lambda-powertools", "boto3"} <= names
    assert not names & {"aws-cdk-lib", "moto", "pytest", "typer"}


def test_bundle_copies_shared_and_services(tmp_path):
    bundle = load_bundle_script()
    bundle.copy_sources(tmp_path)
    assert (tmp_path / "shared" / "layout.py").is_file()
    assert (tmp_path / "services" / "__init__.py").is_file()
    assert not list(tmp_path.rglob("__pycache__"))
