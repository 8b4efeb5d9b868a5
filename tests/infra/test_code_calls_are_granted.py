"""Every AWS operation the code names is a real IAM action that the stack grants somewhere.

The role scenarios (test_roles_allow_their_calls.py) prove, per role, the calls they make; this
scan finds every operation named anywhere in the deployed code (`services/`, `shared/`) and the
operator CLI (`ops/`, but for `ops/local/`, which only ever talks to moto), so a call on a path
no scenario takes cannot go without a grant unnoticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from tests.infra.iam.calls import action_of, is_real_action
from tests.infra.iam.policies import as_list

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

ROOT = Path(__file__).resolve().parents[2]
CODE = ("services", "shared", "ops")
NOT_DEPLOYED = ("ops/local",)
SERVICES = ("s3", "sqs", "events", "secretsmanager", "cloudformation", "cloudwatch")


def _operations_by_snake_name() -> dict[str, list[tuple[str, str]]]:
    session = botocore.session.get_session()
    by_name: dict[str, list[tuple[str, str]]] = {}
    for service in SERVICES:
        for operation in session.get_service_model(service).operation_names:
            by_name.setdefault(xform_name(operation), []).append((service, operation))
    return by_name


def _code_files() -> Iterator[Path]:
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not any(path.is_relative_to(ROOT / skip) for skip in NOT_DEPLOYED):
                yield path


def _names_called(path: Path) -> Iterator[str]:
    """Method names called in a file, and the operation names given to `get_paginator`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        yield node.func.attr
        first = node.args[0] if node.args else None
        if node.func.attr == "get_paginator" and isinstance(first, ast.Constant):
            yield str(first.value)


def operations_in_code() -> dict[str, list[tuple[str, str]]]:
    """`where` -> the (service, operation) candidates of each AWS method the code calls."""
    by_name = _operations_by_snake_name()
    found: dict[str, list[tuple[str, str]]] = {}
    for path in _code_files():
        for name in _names_called(path):
            if name in by_name:
                found[f"{path.relative_to(ROOT)}: {name}"] = by_name[name]
    return found


def granted_anywhere(template: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for resource in template["Resources"].values():
        doc = resource.get("Properties", {}).get("PolicyDocument")
        if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"} and doc:
            for statement in as_list(doc["Statement"]):
                if statement["Effect"] == "Allow":
                    actions |= {str(a) for a in as_list(statement["Action"])}
    return actions


def test_the_scan_finds_the_calls_it_is_for():
    found = operations_in_code()
    assert any(where.endswith(": put_events") for where in found)
    assert any(where.endswith(": list_object_versions") for where in found)
    assert any(where.endswith(": get_secret_value") for where in found)


def test_every_operation_the_code_names_is_granted(synth):
    granted = {a.lower() for a in granted_anywhere(synth.template)}
    ungranted = []
    for where, candidates in sorted(operations_in_code().items()):
        actions = [action_of(service, operation) for service, operation in candidates]
        assert all(is_real_action(a) for a in actions), (where, actions)
        if not any(a.lower() in granted for a in actions):
            ungranted.append(f"{where} -> {actions}")
    assert not ungranted, "called by the code, granted by no role:\n" + "\n".join(ungranted)
