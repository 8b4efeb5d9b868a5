"""The Glue catalog and the Athena workgroup (issue 19): every Glue table is the Parquet the
transform writes, column for column, with its partitions projected (no crawler)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from services.transform import parquet
from services.transform.changes import ALL_TABLES, CHANGE_TABLES
from services.transform.warehouse import FACTS
from shared import naming
from shared.layout import WAREHOUSE_PARTITION_COLUMN

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

# How Athena reads each Parquet type the transform writes: written out here, not derived
# from infra/catalog.py's mapping, so a wrong mapping there fails.
ATHENA_TYPE_OF_PARQUET = {
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.string(): "string",
    pa.date32(): "date",
    pa.time64("us"): "bigint",  # microseconds since midnight (Hive has no time type)
    pa.decimal128(12, 2): "decimal(12,2)",
    pa.bool_(): "boolean",
    pa.timestamp("us"): "timestamp",
}


def glue_tables(synth: Any) -> dict[str, dict[str, Any]]:
    tables = {}
    for resource in synth.of_type("AWS::Glue::Table").values():
        props = resource["Properties"]
        tables[props["TableInput"]["Name"]] = props
    return tables


def location_parts(value: Any) -> list[Any]:
    """An `s3://<bucket>/key` built with Fn::Join: its parts."""
    (separator, parts) = value["Fn::Join"]
    assert separator == ""
    return list(parts)


def ingest_bucket_ref(synth: Any) -> dict[str, str]:
    return {"Ref": synth.ingest_bucket_id()}


def test_a_glue_table_per_warehouse_table_and_per_change_table(synth):
    tables = glue_tables(synth)
    assert set(tables) == set(ALL_TABLES)
    assert {t.name for t in CHANGE_TABLES.values()} <= set(tables)
    (database,) = synth.of_type("AWS::Glue::Database").values()
    name = database["Properties"]["DatabaseInput"]["Name"]
    assert name == naming.glue_database_name()
    assert {t["DatabaseName"] for t in tables.values()} == {name}


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_each_glue_table_has_the_columns_and_partitions_of_the_parquet_written(synth, name):
    table = ALL_TABLES[name]
    props = glue_tables(synth)[name]["TableInput"]
    storage = props["StorageDescriptor"]
    schema = parquet.arrow_schema(table)
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == [
        (f.name, ATHENA_TYPE_OF_PARQUET[f.type]) for f in schema
    ]
    partitions = [(c["Name"], c["Type"]) for c in props.get("PartitionKeys", [])]
    if table in FACTS:
        assert partitions == [(WAREHOUSE_PARTITION_COLUMN, "string")]
    else:
        assert partitions == []
    assert props["TableType"] == "EXTERNAL_TABLE"
    assert props["Parameters"]["classification"] == "parquet"
    assert storage["SerdeInfo"]["SerializationLibrary"] == (
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    )
    assert storage["InputFormat"].endswith("MapredParquetInputFormat")
    assert location_parts(storage["Location"]) == [
        "s3://",
        ingest_bucket_ref(synth),
        f"/{table.prefix}",
    ]


@pytest.mark.parametrize("fact", [t.name for t in FACTS])
def test_fact_partitions_are_projected_months_where_the_transform_writes_them(synth, fact):
    params = glue_tables(synth)[fact]["TableInput"]["Parameters"]
    column = WAREHOUSE_PARTITION_COLUMN
    assert params["projection.enabled"] == "true"
    assert params[f"projection.{column}.type"] == "date"
    assert params[f"projection.{column}.format"] == "yyyy-MM"
    assert params[f"projection.{column}.range"].endswith(",NOW")
    assert params[f"projection.{column}.interval.unit"] == "MONTHS"
    template = location_parts(params["storage.location.template"])
    # the template names the folder warehouse_file_key writes (`.../created_month=2022-11/`)
    from shared.layout import warehouse_file_key

    written = warehouse_file_key(fact, "2022-11").removesuffix("part-0.parquet")
    assert template[0] == "s3://"
    assert template[1] == ingest_bucket_ref(synth)
    assert template[2].replace("${" + column + "}", "2022-11") == f"/{written}"


def test_the_workgroup_writes_encrypted_results_to_a_bucket_of_its_own(synth):
    _, workgroup = synth.one("AWS::Athena::WorkGroup", Name=naming.athena_workgroup_name())
    config = workgroup["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    results = config["ResultConfiguration"]
    assert results["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    parts = location_parts(results["OutputLocation"])
    assert parts[0] == "s3://"
    bucket_id = parts[1]["Ref"]
    assert bucket_id != synth.ingest_bucket_id()
    bucket = synth.props(bucket_id)
    assert bucket["LoggingConfiguration"]["LogFilePrefix"] == "athena-results/"
    assert bucket["PublicAccessBlockConfiguration"]["BlockPublicAcls"] is True
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] > 0
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policies = [
        p["Properties"]
        for p in synth.of_type("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    (policy,) = policies
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_outputs_name_the_database_the_workgroup_and_the_results_bucket(synth):
    outputs = synth.template["Outputs"]
    assert outputs["GlueDatabaseName"]["Value"] == naming.glue_database_name()
    _, workgroup = synth.one("AWS::Athena::WorkGroup", Name=naming.athena_workgroup_name())
    assert "Ref" in outputs["AthenaWorkGroupName"]["Value"]
    results = location_parts(
        workgroup["WorkGroupConfiguration"]["ResultConfiguration"]["OutputLocation"]
    )
    assert outputs["AthenaResultsBucketName"]["Value"] == results[1]
