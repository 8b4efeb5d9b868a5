"""Wiring: settings → adapters → one ingest run. Shared by the Lambda and `ingestctl`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from services.ingest.ingest import IngestReport, run_ingest
from services.ingest.log_ingest import SlotCapture
from services.ingest.logical import LogicalReader
from services.ingest.pause import EventBridgeSchedule
from services.ingest.settings import IngestSettings
from services.ingest.source import PostgresSource, SecretsManagerCredentials, SourceCredentials
from shared.events import EventPublisher
from shared.storage import BucketStore


def credentials_from(settings: IngestSettings) -> Callable[[], SourceCredentials]:
    """The secret on AWS (read when the source is first used), else the local URL; either
    with the SOURCE_* settings over it."""
    overrides = settings.source_overrides()
    if settings.source_secret_arn:
        return SecretsManagerCredentials(settings.source_secret_arn, overrides=overrides)
    url = settings.source_url or ""
    where = IngestSettings.variable("source_url")
    return lambda: overrides.apply(SourceCredentials.from_url(url), where)


def run_with_settings(settings: IngestSettings) -> IngestReport:
    schedule = (
        EventBridgeSchedule(settings.schedule_rule_name) if settings.schedule_rule_name else None
    )
    credentials = credentials_from(settings)
    store = BucketStore(settings.bucket_name)
    log_tables = settings.log_tables()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(PostgresSource(credentials))
        log = None
        if log_tables:
            reader = stack.enter_context(
                LogicalReader(credentials, settings.replication_slot, log_tables)
            )
            log = SlotCapture(reader, store, [s.name for s in log_tables])
        return run_ingest(
            source,
            store,
            EventPublisher(settings.event_bus_name),
            overlap=settings.overlap,
            schedule=schedule,
            log=log,
        )
