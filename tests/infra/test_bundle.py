"""`make bundle`: wheels for Lambda's platform and Python version, plus our packages."""

from __future__ import annotations

import importlib.util
import sys
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
    sys.modules["bundle"] = module  # dataclasses look their module up while the class is built
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


def test_only_the_transform_bundle_carries_pyarrow(tmp_path):
    bundle = load_bundle_script()
    base, transform = bundle.BUNDLES["base"], bundle.BUNDLES["transform"]
    pyproject = ROOT / "pyproject.toml"
    base_names = {r.split(">")[0] for r in bundle.runtime_requirements(pyproject, base.extras)}
    names = {r.split(">")[0] for r in bundle.runtime_requirements(pyproject, transform.extras)}
    assert "pyarrow" not in base_names
    assert names == base_names | {"pyarrow"}
    bundle.copy_sources(tmp_path, base.excluded)
    assert (tmp_path / "services" / "merge" / "handler.py").is_file()
    assert not (tmp_path / "services" / "transform").exists()


def test_transform_bundle_fits_lambdas_unzipped_limit(tmp_path):
    """Builds the real transform bundle (arm64 wheels from the package index, ~15 s)."""
    import subprocess

    bundle = load_bundle_script()
    try:
        out = bundle.build(bundle.BUNDLES["transform"], tmp_path / "transform")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no package index to fetch the Lambda wheels from: {exc}")
    size = bundle.tree_size(out)
    assert (out / "pyarrow").is_dir()
    assert (out / "services" / "transform" / "handler.py").is_file()
    assert 100 * 2**20 < size < bundle.LAMBDA_UNZIPPED_LIMIT_BYTES
