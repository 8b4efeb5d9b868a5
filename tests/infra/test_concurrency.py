"""Lambda concurrency: what the stack can run at once, the synth-time check against the
account's quota, and queues that a burst of throttles cannot drain into their DLQs."""

from __future__ import annotations

import json

import pytest

from infra import constants
from infra.stack import concurrency_warning
from shared.tables import TABLES

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

WARNING_ID = "ingest:accountConcurrency"


def test_max_concurrent_executions_matches_the_template(synth):
    mappings = synth.of_type("AWS::Lambda::EventSourceMapping").values()
    by_event_sources = sum(m["Properties"]["ScalingConfig"]["MaximumConcurrency"] for m in mappings)
    polled = {m["Properties"]["FunctionName"]["Ref"] for m in mappings}
    # The rest are invoked asynchronously (schedule, alarm rule), one at a time: CDK's
    # notifications handler runs only during a deployment.
    others = [
        k
        for k in synth.of_type("AWS::Lambda::Function")
        if k not in polled and not k.startswith("BucketNotificationsHandler")
    ]
    assert len(others) == 2  # ingest, pause
    assert constants.max_concurrent_executions() == by_event_sources + len(others)
    assert constants.MIN_ACCOUNT_CONCURRENCY == 2 * len(TABLES) + 2 + 1 + 1 == 26


@pytest.mark.parametrize(("quota", "warns"), [(None, False), (10, True), (25, True), (26, False)])
def test_concurrency_warning_only_below_the_stacks_maximum(quota, warns):
    warning = concurrency_warning(quota)
    assert (warning is not None) == warns
    if warning:
        assert f"is {quota}," in warning
        assert str(constants.MIN_ACCOUNT_CONCURRENCY) in warning


def test_no_concurrency_warning_without_the_context(synth):
    manifest = (synth.outdir / "manifest.json").read_text()
    assert WARNING_ID not in manifest


def test_account_concurrency_context_below_the_maximum_warns_at_synth(tmp_path):
    from aws_cdk import App
    from aws_cdk.assertions import Annotations, Match

    from app import build_app

    asset = tmp_path / "asset"
    asset.mkdir()
    (asset / "placeholder.py").write_text("# stands in for the Lambda bundle\n")
    # As `cdk synth -c account_concurrency=10` passes it: a string.
    context = {"asset_dir": str(asset), "transform_asset_dir": str(asset)}
    context["account_concurrency"] = "10"
    stack = build_app(App(context=context, outdir=str(tmp_path / "cdk.out")))
    Annotations.from_stack(stack).has_warning(
        "/IngestStack", Match.string_like_regexp(r"account_concurrency is 10, .* 26 Lambda")
    )


def test_event_source_queues_survive_a_burst_of_throttles(synth):
    # AWS: visibility timeout >= 6 x the function timeout, maxReceiveCount >= 5. A throttled
    # message returns after the visibility timeout, so the first run's burst (seconds) costs
    # it one receive, not five.
    functions = synth.of_type("AWS::Lambda::Function")
    mappings = list(synth.of_type("AWS::Lambda::EventSourceMapping").values())
    assert len(mappings) == len(TABLES) + 1  # merges, transform
    for mapping in mappings:
        props = mapping["Properties"]
        queue_id = props["EventSourceArn"]["Fn::GetAtt"][0]
        queue = synth.props(queue_id)
        timeout = functions[props["FunctionName"]["Ref"]]["Properties"]["Timeout"]
        assert queue["VisibilityTimeout"] >= 6 * timeout, queue_id
        redrive = queue["RedrivePolicy"]
        if isinstance(redrive, str):
            redrive = json.loads(redrive)
        assert redrive["maxReceiveCount"] >= 5, queue_id
