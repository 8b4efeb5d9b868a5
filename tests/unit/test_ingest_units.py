"""Ingest pieces that need no database: settings, credentials, SQL text, state, publisher."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest

from ops.pg import column_sql_type, table_ddl
from services.ingest.ingest import TableState, next_state
from services.ingest.pause import pause_reason
from services.ingest.settings import IngestSettings, SettingsError
from services.ingest.source import (
    SecretsManagerCredentials,
    SourceConfigError,
    SourceCredentials,
    select_sql,
)
from shared import schemas
from shared.events import (
    MAX_KEYS_LISTED,
    EventDeliveryError,
    EventPublisher,
    RowsMissingAtSource,
)
from shared.layout import PAUSE_RECORD_KEY
from shared.storage import BucketStore
from shared.tables import TABLES, TableSpec


# -- settings -------------------------------------------------------------------------------
def test_settings_read_the_lambda_environment():
    settings = IngestSettings.from_env(
        {
            "BUCKET_NAME": "b-1",
            "EVENT_BUS_NAME": "bus",
            "SOURCE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:1:secret:totesys",
            "SCHEDULE_RULE_NAME": "ingest-schedule",
            "OVERLAP_SECONDS": "120",
            "UNRELATED": "x",
        }
    )
    assert settings.bucket_name == "b-1"
    assert settings.overlap == timedelta(seconds=120)
    assert settings.schedule_rule_name == "ingest-schedule"


def test_settings_default_the_overlap_and_the_bus():
    settings = IngestSettings.from_env({"BUCKET_NAME": "b-1", "SOURCE_URL": "postgresql://u@h/d"})
    assert settings.overlap_seconds == 300
    assert settings.event_bus_name == "ingest-events"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SOURCE_URL": "postgresql://u@h/d"}, "BUCKET_NAME"),
        ({"BUCKET_NAME": "b-1"}, "SOURCE_SECRET_ARN"),
        ({"BUCKET_NAME": "b-1", "SOURCE_URL": "x", "OVERLAP_SECONDS": "-1"}, "OVERLAP_SECONDS"),
    ],
)
def test_settings_errors_name_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        IngestSettings.from_env(env)


@pytest.mark.parametrize("seconds", ["0", "1", "59", "86401"])
def test_an_overlap_too_short_to_cover_a_commit_is_refused(seconds):
    # 0 loses a row committed later with last_updated == watermark; under a minute, an
    # ordinary slow commit.
    env = {"BUCKET_NAME": "b-1", "SOURCE_URL": "postgresql://u@h/d", "OVERLAP_SECONDS": seconds}
    with pytest.raises(SettingsError, match=r"OVERLAP_SECONDS: .*must be 60\.\.86400 seconds"):
        IngestSettings.from_env(env)
    assert IngestSettings.from_env({**env, "OVERLAP_SECONDS": "60"}).overlap_seconds == 60


# -- credentials ----------------------------------------------------------------------------
def test_a_source_url_round_trips_with_awkward_passwords():
    creds = SourceCredentials.from_url("postgresql://tote:p%40ss%2Fw0rd@db.example:6543/totesys")
    assert (creds.user, creds.password, creds.host, creds.port, creds.database) == (
        "tote",
        "p@ss/w0rd",
        "db.example",
        6543,
        "totesys",
    )
    assert SourceCredentials.from_url(creds.url()) == creds
    assert "p@ss" not in repr(creds)


@pytest.mark.parametrize("url", ["mysql://u:p@h/d", "postgresql://h/d", "postgresql://u@h/"])
def test_a_bad_source_url_is_refused(url):
    with pytest.raises(SourceConfigError):
        SourceCredentials.from_url(url)


def test_credentials_come_from_a_secrets_manager_secret(aws):
    client = boto3.client("secretsmanager")
    ours = client.create_secret(
        Name="totesys",
        SecretString=json.dumps(
            {"host": "db", "port": 5432, "database": "totesys", "user": "u", "password": "pw"}
        ),
    )["ARN"]
    rds = client.create_secret(
        Name="rds-style",
        SecretString=json.dumps(
            {
                "host": "db",
                "port": 5433,
                "dbname": "t",
                "username": "v",
                "password": "pw2",
                "engine": "postgres",
            }
        ),
    )["ARN"]
    assert SecretsManagerCredentials(ours)() == SourceCredentials(
        host="db", port=5432, database="totesys", user="u", password="pw"
    )
    assert SecretsManagerCredentials(rds)().user == "v"
    assert SecretsManagerCredentials(rds)().database == "t"


def test_an_unusable_secret_is_named_without_its_value(aws):
    client = boto3.client("secretsmanager")
    arn = client.create_secret(
        Name="half", SecretString=json.dumps({"host": "db", "password": "sekret"})
    )["ARN"]
    with pytest.raises(SourceConfigError, match="half") as caught:
        SecretsManagerCredentials(arn)()
    assert "sekret" not in str(caught.value)
    assert "user" in str(caught.value)


# -- SQL ------------------------------------------------------------------------------------
def test_select_names_the_registry_columns_and_quotes_identifiers():
    sql = select_sql(TABLES["design"], since=True)
    assert sql == (
        'SELECT "design_id", "created_at", "last_updated", "design_name", "file_location", '
        '"file_name" FROM "design" WHERE "last_updated" >= :since ORDER BY "design_id"'
    )
    odd = TableSpec('cur"rency', "currency_id", schemas.Currency)
    assert 'FROM "cur""rency"' in select_sql(odd, since=False)
    assert "WHERE" not in select_sql(odd, since=False)


def test_column_types_come_from_the_row_models():
    assert column_sql_type(TABLES["payment"], "payment_amount") == ("numeric", False)
    assert column_sql_type(TABLES["payment"], "paid") == ("boolean", False)
    assert column_sql_type(TABLES["payment"], "payment_date") == ("varchar", False)
    assert column_sql_type(TABLES["payment"], "last_updated") == ("timestamp", False)
    assert column_sql_type(TABLES["transaction"], "sales_order_id") == ("integer", True)
    assert column_sql_type(TABLES["address"], "district") == ("varchar", True)
    ddl = table_ddl(TABLES["transaction"])
    assert '"transaction_id" integer PRIMARY KEY' in ddl
    assert '"sales_order_id" integer,' in ddl
    assert '"transaction_type" varchar NOT NULL' in ddl


# -- state ----------------------------------------------------------------------------------
def _staff(key: int, stamp: datetime) -> schemas.RowModel:
    return schemas.Staff(
        staff_id=key,
        first_name="A",
        last_name="B",
        department_id=1,
        email_address="a.b@terrifictotes.com",
        created_at=stamp,
        last_updated=stamp,
    )


def test_the_watermark_is_the_greatest_last_updated_read_and_stays_without_rows():
    spec = TABLES["staff"]
    t0 = datetime(2024, 11, 14, 9, 0)
    rows = [_staff(1, t0 - timedelta(hours=1)), _staff(2, t0), _staff(3, t0 - timedelta(minutes=4))]
    clock = t0 + timedelta(hours=1)
    state = next_state(spec, None, rows, timedelta(minutes=5), read_at=clock)
    assert state.watermark == t0
    assert sorted(state.recent) == [2, 3]  # only the overlap window is remembered
    assert next_state(spec, t0, [], timedelta(minutes=5), read_at=clock).watermark == t0
    # An older row read later never moves the watermark back.
    assert next_state(spec, t0, [rows[0]], timedelta(minutes=5), read_at=clock).watermark == t0
    assert TableState.model_validate_json(state.model_dump_json()) == state


# -- pause ----------------------------------------------------------------------------------
def test_an_unreadable_pause_record_counts_as_paused(aws):
    boto3.client("s3").create_bucket(
        Bucket="b-1", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    store = BucketStore("b-1")
    assert pause_reason(store, None) is None
    store.put(PAUSE_RECORD_KEY, b"{not json")
    assert "treated as paused" in (pause_reason(store, None) or "")


# -- events ---------------------------------------------------------------------------------
def test_a_long_list_of_missing_keys_is_cut_but_counted():
    event = RowsMissingAtSource.of("design", list(range(MAX_KEYS_LISTED + 5, 0, -1)))
    assert event.missing_count == MAX_KEYS_LISTED + 5
    assert event.keys == list(range(1, MAX_KEYS_LISTED + 1))
    assert event.truncated
    assert (
        event.event_id
        == RowsMissingAtSource.of(
            "design", [*event.keys[::-1], 1001, 1002, 1003, 1004, 1005]
        ).event_id
    )
    assert event.event_id != RowsMissingAtSource.of("design", event.keys).event_id


class FlakyEventBridge:
    """PutEvents that refuses the first attempts (EventBridge reports, it does not raise)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries):
        self.calls.append(list(Entries))
        if len(self.calls) <= self.refusals:
            return {
                "FailedEntryCount": 1,
                "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}],
            }
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}


def test_the_publisher_resends_refused_entries():
    client = FlakyEventBridge(refusals=2)
    EventPublisher("bus", client=client).publish([RowsMissingAtSource.of("design", [4])])  # type: ignore[arg-type]
    assert len(client.calls) == 3
    assert json.loads(client.calls[-1][0]["Detail"])["keys"] == [4]
    assert client.calls[-1][0]["EventBusName"] == "bus"


def test_the_publisher_gives_up_loudly():
    client = FlakyEventBridge(refusals=10)
    with pytest.raises(EventDeliveryError, match="not accepted"):
        EventPublisher("bus", client=client).publish([RowsMissingAtSource.of("design", [4])])  # type: ignore[arg-type]


def test_a_bad_source_url_fails_the_settings_not_every_table():
    with pytest.raises(SettingsError, match="postgresql://"):
        IngestSettings.from_env({"BUCKET_NAME": "b-1", "SOURCE_URL": "mysql://u@h/d"})
