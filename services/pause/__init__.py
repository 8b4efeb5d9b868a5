"""The pause Lambda: a DLQ alarm disables the ingest schedule and records why."""
