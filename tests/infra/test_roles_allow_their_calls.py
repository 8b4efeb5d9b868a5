"""Every role allows every call its function's code makes, and nothing else.

Each test deploys the chain on moto (the local runtime's resources, named as the stack names
them), then runs one function's own scenario through its real handler with real-shaped events,
signed as a role holding exactly the policy documents the synthesized template gives that
function, with moto's IAM enforcement on. Then, over every call the code made (recorded at
botocore's hooks):
- none was denied by moto;
- each call's IAM authorisations (tests/infra/iam/calls.py) are real IAM actions and are
  allowed by the role's documents as AWS evaluates them: resources and conditions included.
  This second check is there because moto cannot: it evaluates no conditions of identity
  policies and matches resources only for S3 and SQS (what is relaxed for moto is listed by
  `policies.for_moto` and asserted below);
- every action the role grants was used by the code, or by the AWS service acting for the
  function (Lambda's logs, the SQS event source), with the reason in tests/infra/iam/roles.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.pg import create_database, load_snapshot
from ops.sample_data import SampleDatabase
from services.ingest.handler import handler as ingest_handler
from services.ingest.source import connect
from services.merge import handler as merge_handler
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from services.pause.handler import handler as pause_handler
from services.transform import handler as transform_handler
from shared import naming
from shared.layout import baseline_key, staging_key
from shared.observation import observed_at_metadata
from shared.rows import dump_rows, validate_rows
from shared.tables import TABLES
from tests.infra.iam import policies, roles
from tests.infra.iam.world import REGION, Signed, World, create_world, signed_as
from tests.integration.merge_pipeline import LambdaContext, table_partitions
from tests.rows import T0, staff

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def world(synth, aws):
    return create_world(synth.template, list(TABLES))


def use_environment(world: World, function_name: str, monkeypatch) -> None:
    for name, value in world.function_environment(function_name).items():
        monkeypatch.setenv(name, value)


# ---- merge -----------------------------------------------------------------------------


def _sqs_record(message: Any, queue_arn: str) -> dict[str, Any]:
    """A received message as the SQS event source hands it to Lambda."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message["Attributes"],
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def _sqs_event(world: World, table: str, messages: list[Any]) -> dict[str, Any]:
    queue = world.local.tables[table].queue
    return {"Records": [_sqs_record(m, queue.arn) for m in messages]}


def _deliver(world: World, signed, table: str, *, again: bool = False) -> list[str]:
    """What the SQS event source does (as the admin: it is AWS's part), calling the merge
    handler (signed as the role) with each batch; returns the failed message ids. `again`
    delivers each message a second time, as SQS may (at-least-once)."""
    failed: list[str] = []
    queue = world.local.tables[table].queue
    while True:
        with world.as_admin(signed.recorder) as admin:
            messages = admin.sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
        if not messages:
            return failed
        for _ in range(2 if again else 1):
            response = merge_handler.handler(_sqs_event(world, table, messages), LambdaContext())
            failed += [f["itemIdentifier"] for f in response["batchItemFailures"]]
        with world.as_admin(signed.recorder) as admin:
            for m in messages:
                admin.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])


def _upload(world: World, signed, key: str, body: bytes) -> None:
    """The ingest's upload (another role's call: made as the admin)."""
    with world.as_admin(signed.recorder) as admin:
        admin.s3.put_object(
            Bucket=world.local.bucket,
            Key=key,
            Body=body,
            Metadata=observed_at_metadata(datetime.now(UTC)),
        )


def row(table: str, key: int, minutes: int) -> Any:
    """A version of row `key` of staff or department, `minutes` after T0."""
    if table == "staff":
        return staff(key, minutes)
    stamp = T0 + timedelta(minutes=minutes)
    fields: dict[str, Any] = {
        "department_id": key,
        "department_name": f"Department {key} at {minutes}",
        "location": "Leeds",
        "manager": "Ada",
        "created_at": T0,
        "last_updated": stamp,
    }
    return TABLES[table].row_model(**fields)


def _merge_scenario(world: World, table: str, monkeypatch) -> Signed:
    """A baseline; a staging file that replaces a row and adds one, delivered twice (the
    second finds its version gone); a file with a bad row (quarantined, its message sent to
    the DLQ)."""
    name = naming.merge_function_name(table)
    use_environment(world, name, monkeypatch)
    spec = TABLES[table]
    rows = [row(table, k, 0) for k in (1, 2, 3)]
    merge_handler.use_service(None)
    with signed_as(world, f"merge-{table}", world.role_documents(name), monkeypatch) as signed:
        _upload(world, signed, baseline_key(table), dump_rows(spec, rows))
        assert _deliver(world, signed, table) == []
        changed = [row(table, 2, 30), row(table, 4, 30)]
        _upload(world, signed, staging_key(table), dump_rows(spec, changed))
        assert _deliver(world, signed, table, again=True) == []
        _upload(world, signed, staging_key(table), b'[{"not_a_column": "x"}]')
        assert _deliver(world, signed, table) == []
    merge_handler.use_service(None)
    dlq = world.admin.sqs.get_queue_attributes(
        QueueUrl=world.local.tables[table].dlq.url,
        AttributeNames=["ApproximateNumberOfMessages"],
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "1"
    return signed


def test_the_merge_role_allows_every_merge_call(world, monkeypatch):
    """One table with latest as one file, another partitioned: each under its own role."""
    one_file = _merge_scenario(world, "staff", monkeypatch)
    with table_partitions("department", 2):
        partitioned = _merge_scenario(world, "department", monkeypatch)
    for signed in (one_file, partitioned):
        assert signed.moto_policy.relaxed  # the prefix condition on listings, the bus's ARN
    roles.check(one_file, partitioned, service_side=roles.LAMBDA_RUNTIME | roles.SQS_EVENT_SOURCE)
    roles.check_event_source(one_file, world.local.tables["staff"].queue.arn)
    roles.check_event_source(partitioned, world.local.tables["department"].queue.arn)


# ---- transform -------------------------------------------------------------------------


def _merge_as_admin(world: World, table: str, rows: list[Any], *, baseline: bool) -> None:
    """The merge's part (another role's, not under test here): the real merge, as the admin."""
    spec = TABLES[table]
    key = baseline_key(table) if baseline else staging_key(table)
    report = validate_rows(spec, rows, key)
    assert report.problems == []
    put = world.admin.s3.put_object(
        Bucket=world.local.bucket,
        Key=key,
        Body=dump_rows(spec, report.rows),
        Metadata=observed_at_metadata(datetime.now(UTC)),
    )
    assert _merge_version_as_admin(world, table, key, put["VersionId"]) is not None


def _merge_version_as_admin(
    world: World, table: str, key: str, version_id: str, message_body: str = "{}"
) -> Any:
    """The real merge of one uploaded version, as the admin (not the role under test)."""
    settings = MergeSettings(
        bucket_name=world.local.bucket,
        table_name=table,
        event_bus_name=world.local.event_bus,
        dlq_url=world.local.tables[table].dlq.url,
    )
    ref = ObjectRef(world.local.bucket, key, version_id, message_body=message_body)
    return merge_handler.build_service(settings).process(ref)


def _transform_batches(world: World, signed: Signed) -> list[str]:
    """The transform's event source: every routed merge event, ten at a time, to the handler
    (signed as the role); returns the failed message ids."""
    queue = world.local.consumers[naming.TRANSFORM_CONSUMER]
    failed: list[str] = []
    while True:
        with world.as_admin(signed.recorder) as admin:
            messages = admin.sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
            for m in messages:
                admin.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])
        if not messages:
            return failed
        event = {"Records": [_sqs_record(m, queue.arn) for m in messages]}
        context: Any = LambdaContext(function_name=naming.transform_function_name())
        response = transform_handler.handler(event, context)
        failed += [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_the_transform_role_allows_every_transform_call(world, monkeypatch):
    """A baseline of every table (sales_order partitioned), then an order changed."""
    name = naming.transform_function_name()
    snapshot = SampleDatabase(seed=5, orders=30).snapshot()
    with table_partitions("sales_order", 10):
        for table, rows in snapshot.items():
            _merge_as_admin(world, table, rows, baseline=True)
        use_environment(world, name, monkeypatch)
        transform_handler.use_runtime(None)
        with signed_as(world, "transform", world.role_documents(name), monkeypatch) as signed:
            assert _transform_batches(world, signed) == []
            order = dict(snapshot["sales_order"][0])
            order["units_sold"] = int(order["units_sold"]) + 1
            order["last_updated"] = datetime.now()
            with world.as_admin(signed.recorder):
                _merge_as_admin(world, "sales_order", [order], baseline=False)
            assert _transform_batches(world, signed) == []
        transform_handler.use_runtime(None)
    facts = world.admin.s3.list_objects_v2(
        Bucket=world.local.bucket, Prefix="warehouse/fact_sales_order"
    )
    assert facts.get("KeyCount", 0) > 0
    service_side = roles.LAMBDA_RUNTIME | roles.SQS_EVENT_SOURCE | roles.GONE_VERSION_LISTING
    roles.check(signed, service_side=service_side)
    roles.check_event_source(signed, world.local.consumers[naming.TRANSFORM_CONSUMER].arn)


# ---- ingest ----------------------------------------------------------------------------


def _merge_uploads_as_admin(world: World) -> None:
    """The merges of what the ingest uploaded (other roles' work, done as the admin)."""
    for table in TABLES:
        for key in (baseline_key(table), staging_key(table)):
            try:
                head = world.admin.s3.head_object(Bucket=world.local.bucket, Key=key)
            except world.admin.s3.exceptions.ClientError:
                continue
            _merge_version_as_admin(world, table, key, head["VersionId"])


@pytest.fixture
def source_secret(world, pg_server):
    """A database of sample rows, and a secret naming it as an RDS-managed secret does."""
    database = "iam_ingest"
    admin = connect(pg_server.credentials())
    try:
        create_database(admin, database)
    finally:
        admin.close()
    conn = connect(pg_server.credentials(database))
    load_snapshot(conn, SampleDatabase(seed=7, orders=20).snapshot())
    credentials = pg_server.credentials(database)
    secret = {
        "username": credentials.user,
        "password": credentials.password,
        "host": credentials.host,
        "port": credentials.port,
        "dbname": credentials.database,
    }
    client = boto3.client("secretsmanager", region_name=REGION)  # the admin's ("testing")
    arn = client.create_secret(Name="ingest-source", SecretString=json.dumps(secret))["ARN"]
    world.parameters["SourceSecretArn"] = arn
    try:
        yield conn
    finally:
        conn.close()


def test_the_ingest_role_allows_every_ingest_call(world, source_secret, monkeypatch):
    """A first run (baselines), a run after a change and a delete (staging; the small tables
    reconciled against latest, department's partitioned; the delete reported as an event),
    and a run while paused."""
    name = naming.ingest_function_name()
    use_environment(world, name, monkeypatch)
    # The local server speaks no TLS (TLS is tested in tests/integration/ingest/test_source_tls.py).
    monkeypatch.setenv("SOURCE_SSLMODE", "disable")
    context: Any = LambdaContext(function_name=name)
    with (
        table_partitions("department", 2),
        signed_as(world, "ingest", world.role_documents(name), monkeypatch) as signed,
    ):
        first = ingest_handler({}, context)
        with world.as_admin(signed.recorder):
            _merge_uploads_as_admin(world)
        source_secret.run("UPDATE staff SET first_name = 'Changed', last_updated = now()")
        source_secret.run("DELETE FROM currency WHERE currency_id = 1")  # reported as missing
        second = ingest_handler({}, context)
        with world.as_admin(signed.recorder) as admin:
            admin.events.disable_rule(Name=naming.ingest_schedule_rule_name())
        paused = ingest_handler({}, context)
    assert {t["action"] for t in first["tables"]} == {"baseline"}
    assert any(t["table"] == "staff" and t["rows_written"] for t in second["tables"])
    assert any(t["table"] == "currency" and t["missing_at_source"] for t in second["tables"])
    assert paused["paused"]
    roles.check(signed)


# ---- the operator CLI ------------------------------------------------------------------


def _quarantined_file_as_admin(world: World, table: str) -> None:
    """A staging file with a bad row, merged (as the admin): quarantined, message in the DLQ."""
    key = staging_key(table)
    put = world.admin.s3.put_object(
        Bucket=world.local.bucket,
        Key=key,
        Body=b'[{"not_a_column": 1}]',
        Metadata=observed_at_metadata(datetime.now(UTC)),
    )
    _merge_version_as_admin(world, table, key, put["VersionId"], message_body='{"bad": 1}')


def test_the_operator_policy_allows_every_ingestctl_command(world, monkeypatch, tmp_path):
    """The runbook's commands, signed as a role holding only the stack's operator policy; the
    table partitioned (read by version), its DLQ holding a quarantined batch's message (which
    dismiss drops) and another (which dismiss keeps and redrive moves back)."""
    table = "staff"
    with table_partitions(table, 2):
        _operator_scenario(world, table, monkeypatch, tmp_path)


def _operator_scenario(world: World, table: str, monkeypatch, tmp_path) -> None:
    _merge_as_admin(world, table, [staff(k).model_dump() for k in (1, 2, 3)], baseline=True)
    _quarantined_file_as_admin(world, table)
    world.admin.sqs.send_message(
        QueueUrl=world.local.tables[table].dlq.url, MessageBody='{"failed": "elsewhere"}'
    )
    archive = world.admin.s3.list_objects_v2(Bucket=world.local.bucket, Prefix=f"archive/{table}/")[
        "Contents"
    ][0]["Key"]
    documents = policies.managed_policy_documents(
        world.template, f"{naming.DEFAULT_PREFIX}-operator", world.deployment
    )

    outputs: dict[str, str] = {}

    def cli(*args: str) -> int:
        result = CliRunner().invoke(app, ["--bucket", world.local.bucket, *args])
        outputs[args[0]] = result.output
        return result.exit_code

    with signed_as(world, "operator", documents, monkeypatch) as signed:
        codes = {
            "status": cli("status", "--json", "--table", table),
            "history": cli("history", table, "2", "--json"),
            "asof": cli("asof", table, "--at", "2030-01-01T00:00:00", "--out", str(tmp_path / "a")),
            "pause": cli("pause", "--reason", "database maintenance"),
            "dismiss": cli("dismiss", "--table", table, "--reason", "fixed", "--by", "ana"),
            "redrive": cli("redrive", "--table", table),
            "replay": cli("replay", "--table", table, "--archive", archive),
            "resume": cli("resume", "--table", table),
        }
    assert [str(c) for c in signed.recorder.denied()] == []
    assert codes == {
        "status": 3,  # a DLQ holds a message and a file is quarantined
        "history": 0,
        "asof": 0,
        "pause": 0,
        "dismiss": 0,
        "redrive": 0,
        "replay": 0,
        "resume": 0,
    }
    roles.check(signed, service_side=roles.OPERATOR_ELSEWHERE)


# ---- pause -----------------------------------------------------------------------------


def test_the_pause_role_allows_every_pause_call(world, monkeypatch):
    name = naming.pause_function_name()
    use_environment(world, name, monkeypatch)
    event = json.loads((FIXTURES / "alarm_state_change.json").read_text())
    context: Any = LambdaContext(function_name=name)
    with signed_as(world, "pause", world.role_documents(name), monkeypatch) as signed:
        first = pause_handler(event, context)
        again = pause_handler(event, context)
    assert first["changed"] is True
    assert again["changed"] is False
    state = world.admin.events.describe_rule(Name=naming.ingest_schedule_rule_name())["State"]
    assert state == "DISABLED"
    roles.check(signed)
