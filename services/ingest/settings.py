"""The ingest's settings, read once from the environment into a Pydantic model."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Self

from pydantic import Field, ValidationError, field_validator, model_validator

from services.ingest.source import SourceCredentials, SourceOverrides, SslMode
from shared.environment import EnvironmentSettings
from shared.naming import event_bus_name, replication_slot_name
from shared.tables import TABLES, TableSpec

DEFAULT_OVERLAP_SECONDS = 300
# The overlap must outlast the gap between a transaction stamping `last_updated` (PostgreSQL's
# now() is the transaction's start) and its commit: a row committed later than that, stamped
# before the watermark, is lost to a table that is not reconciled. 0 loses even a commit
# stamped at the watermark itself; a minute is the least that covers an ordinary slow commit
# (a lock wait, a batch of writes). Longer transactions at the source need a longer overlap.
MIN_OVERLAP_SECONDS = 60
MAX_OVERLAP_SECONDS = 86_400


# Where the source is: on AWS a Secrets Manager secret and the stack's Source* parameters over
# it, locally a postgresql:// URL. The one way the two environments differ (the local runtime's
# test holds them to this).
SOURCE_ON_AWS = (
    "source_secret_arn",
    "source_host",
    "source_port",
    "source_database",
    "source_sslmode",
    "source_ca_bundle",
)
SOURCE_LOCALLY = ("source_url",)


class SettingsError(ValueError):
    """The environment does not describe a usable ingest."""


class IngestSettings(EnvironmentSettings):
    """BUCKET_NAME, EVENT_BUS_NAME, SOURCE_SECRET_ARN or SOURCE_URL, SCHEDULE_RULE_NAME,
    OVERLAP_SECONDS; and over the secret's (or URL's) values, where given: SOURCE_HOST,
    SOURCE_PORT, SOURCE_DATABASE, SOURCE_SSLMODE, SOURCE_CA_BUNDLE (a PEM file's path)."""

    bucket_name: str = Field(min_length=3)
    event_bus_name: str = Field(default_factory=event_bus_name)
    # On AWS the source credentials come from Secrets Manager; locally from a URL.
    source_secret_arn: str | None = None
    source_url: str | None = Field(default=None, repr=False)
    # Where and how to connect, over what the secret says (the stack's Source* parameters).
    source_host: str | None = None
    source_port: int | None = Field(default=None, ge=1, le=65535)
    source_database: str | None = None
    source_sslmode: SslMode | None = None
    # A file of PEM CA certificates; a relative path is in the code bundle (LAMBDA_TASK_ROOT,
    # /var/task on Lambda; locally the working directory).
    source_ca_bundle: str | None = None
    lambda_task_root: str | None = None
    # Tables captured from the log besides the registry's `capture="log"` ones: a comma list.
    log_capture_tables: str = ""
    # The logical replication slot log-mode tables are read from.
    replication_slot: str = Field(
        default_factory=replication_slot_name, pattern=r"^[a-z0-9_]{1,63}$"
    )
    # The ingest reads nothing while this EventBridge rule is disabled (the pause).
    schedule_rule_name: str | None = None
    # How far behind the watermark each run re-reads, for rows committed late.
    overlap_seconds: int = DEFAULT_OVERLAP_SECONDS

    @field_validator("overlap_seconds")
    @classmethod
    def _overlap_covers_commit_latency(cls, value: int) -> int:
        if not MIN_OVERLAP_SECONDS <= value <= MAX_OVERLAP_SECONDS:
            raise ValueError(
                f"must be {MIN_OVERLAP_SECONDS}..{MAX_OVERLAP_SECONDS} seconds, got {value}: the "
                "overlap re-reads rows committed after the watermark was taken, and below "
                f"{MIN_OVERLAP_SECONDS} s an ordinary slow commit is lost (0 loses a row "
                "stamped at the watermark itself)"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> IngestSettings:
        if not self.source_secret_arn and not self.source_url:
            secret, url = self.variable("source_secret_arn"), self.variable("source_url")
            raise ValueError(f"set {secret} (on AWS) or {url} (locally)")
        if self.source_url:  # a bad URL fails here, not per table
            url_credentials = SourceCredentials.from_url(self.source_url)
            self.source_overrides().apply(url_credentials, self.variable("source_url"))
        return self

    def source_overrides(self) -> SourceOverrides:
        return SourceOverrides(
            host=self.source_host,
            port=self.source_port,
            database=self.source_database,
            sslmode=self.source_sslmode,
            sslrootcert=self._ca_bundle_path(),
        )

    def _ca_bundle_path(self) -> str | None:
        if not self.source_ca_bundle or not self.lambda_task_root:
            return self.source_ca_bundle
        return str(Path(self.lambda_task_root) / self.source_ca_bundle)  # absolute stays as is

    @field_validator("log_capture_tables")
    @classmethod
    def _known_tables(cls, value: str) -> str:
        unknown = sorted(set(_names(value)) - set(TABLES))
        if unknown:
            raise ValueError(f"not registry tables: {', '.join(unknown)}")
        return value

    def log_tables(self) -> list[TableSpec]:
        """The tables read from the replication slot (the registry's and LOG_CAPTURE_TABLES)."""
        extra = set(_names(self.log_capture_tables))
        return [s for s in TABLES.values() if s.capture == "log" or s.name in extra]

    @property
    def overlap(self) -> timedelta:
        return timedelta(seconds=self.overlap_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Self:
        """The settings from the environment; `overrides` (by field name, None ignored) win:
        `ingestctl ingest-now` takes the deployment's names from its target options."""
        values: dict[str, object] = dict(cls.given(env))
        values |= {name: value for name, value in overrides.items() if value is not None}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise SettingsError(f"ingest settings: {problems}") from None


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]
