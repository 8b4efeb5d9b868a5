"""One synthesized stack per test session (starting JSII and synthesizing take seconds).

Every infra test module is marked `infra` and put in one xdist group, so a single worker builds
this fixture once. The Lambda asset is a tiny temporary folder: synth needs a directory, not
the real bundle (`make bundle`), so no pip runs in tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STACK_ID = "IngestStack"


@dataclass
class Synthesized:
    template: dict[str, Any]
    outdir: Path
    validation_error: str | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.template["Resources"])

    def of_type(self, type_name: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_name}

    def props(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resources[logical_id].get("Properties", {}))

    def ingest_bucket_id(self) -> str:
        """The ingest bucket (versioned, its access logged), not the access-log bucket nor
        Athena's results bucket."""
        (logical_id,) = [
            k
            for k, v in self.of_type("AWS::S3::Bucket").items()
            if {"LoggingConfiguration", "VersioningConfiguration"} <= set(v.get("Properties", {}))
        ]
        return logical_id

    def one(self, type_name: str, **match: Any) -> tuple[str, dict[str, Any]]:
        """The single resource of `type_name` whose properties include `match`."""
        found = [
            (k, v["Properties"])
            for k, v in self.of_type(type_name).items()
            if all(v.get("Properties", {}).get(p) == want for p, want in match.items())
        ]
        assert len(found) == 1, f"{type_name} {match}: found {[k for k, _ in found]}"
        return found[0]


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from aws_cdk import App

    from app import build_app

    asset = tmp_path_factory.mktemp("asset")
    (asset / "placeholder.py").write_text("# stands in for the Lambda bundle\n")
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = App(
        context={"asset_dir": str(asset), "transform_asset_dir": str(asset)}, outdir=str(outdir)
    )
    build_app(app)
    error: str | None = None
    try:
        app.synth()
    except RuntimeError as exc:  # the validation plugins (cdk-nag) refuse the app
        error = str(exc)
    template = json.loads((outdir / f"{STACK_ID}.template.json").read_text())
    report_path = outdir / "validation-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Synthesized(template, outdir, error, report)
