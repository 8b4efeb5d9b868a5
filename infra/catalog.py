"""The Glue Data Catalog over the warehouse and an Athena workgroup to query it.

One Glue table per warehouse table and per change table, its columns derived from the same
`WarehouseTable` the transform writes its Parquet with (services/transform/warehouse.py and
changes.py; `HIVE_TYPES` maps each column kind once). A fact's `created_month=YYYY-MM`
folders are Hive partitions found by partition projection (the table's own properties), so no
crawler and no `MSCK REPAIR TABLE` is needed; dimensions and change tables are one folder
each. The workgroup writes its results, encrypted, to a bucket of its own that forgets them.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_s3 as s3
from constructs import Construct

from services.transform.changes import ALL_TABLES
from services.transform.warehouse import Kind, WarehouseTable
from shared import naming

# Each column kind as Hive/Athena types it, matching the Parquet type the transform writes
# (services/transform/parquet.py). Hive has no time of day: Parquet's TIME_MICROS reads as
# the microseconds since midnight.
HIVE_TYPES: dict[Kind, str] = {
    Kind.INT: "int",
    Kind.RECORD_ID: "bigint",
    Kind.TEXT: "string",
    Kind.DATE: "date",
    Kind.TIME: "bigint",
    Kind.MONEY: "decimal(12,2)",
    Kind.BOOL: "boolean",
    Kind.BIGINT: "bigint",
    Kind.TIMESTAMP: "timestamp",
}
# A fact's months, as partition projection enumerates them (a query naming none reads these).
FIRST_MONTH = "2000-01"
RESULTS_EXPIRY = Duration.days(30)
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
RESULTS_PREFIX = "results/"


def projection(location: str, column: str) -> dict[str, str]:
    """Partition projection of monthly `column=YYYY-MM/` folders under `location`."""
    return {
        "projection.enabled": "true",
        f"projection.{column}.type": "date",
        f"projection.{column}.format": "yyyy-MM",
        f"projection.{column}.range": f"{FIRST_MONTH},NOW",
        f"projection.{column}.interval": "1",
        f"projection.{column}.interval.unit": "MONTHS",
        "storage.location.template": f"{location}{column}=${{{column}}}/",
    }


class WarehouseCatalog(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        bucket: s3.IBucket,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.database_name = naming.glue_database_name(prefix)
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=Aws.ACCOUNT_ID,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description="The warehouse and change tables the transform writes (Parquet)",
            ),
        )
        self.tables = {t.name: self._table(bucket, t) for t in ALL_TABLES.values()}
        self.results = s3.Bucket(
            self,
            "Results",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="athena-results/",
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-query-results",
                    expiration=RESULTS_EXPIRY,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )
        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=naming.athena_workgroup_name(prefix),
            description="Queries over the warehouse's Glue database",
            state="ENABLED",
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=self.results.s3_url_for_object(RESULTS_PREFIX),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                ),
            ),
        )

    def _table(self, bucket: s3.IBucket, table: WarehouseTable) -> glue.CfnTable:
        location = bucket.s3_url_for_object(table.prefix)
        partition = table.partition_column
        parameters = {"classification": "parquet", "EXTERNAL": "TRUE"}
        if partition is not None:
            parameters |= projection(location, partition)
        cfn = glue.CfnTable(
            self,
            f"Table-{table.name}",
            catalog_id=Aws.ACCOUNT_ID,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=table.name,
                table_type="EXTERNAL_TABLE",
                parameters=parameters,
                partition_keys=(
                    [glue.CfnTable.ColumnProperty(name=partition, type="string")]
                    if partition
                    else None
                ),
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[
                        glue.CfnTable.ColumnProperty(name=c.name, type=HIVE_TYPES[c.kind])
                        for c in table.columns
                    ],
                    location=location,
                    input_format=PARQUET_INPUT,
                    output_format=PARQUET_OUTPUT,
                    serde_info=glue.CfnTable.SerdeInfoProperty(serialization_library=PARQUET_SERDE),
                ),
            ),
        )
        cfn.add_dependency(self.database)
        return cfn
