"""When a row version was observed: the order in which versions supersede one another.

`last_updated` is when a transaction *wrote* a row, not when it committed, so it cannot order
versions across reads (docs/merge_protocol.md, "Version order"). A batch is ordered by its
observation instead: the time the ingest read it (the database's clock, sent with the file as
object metadata), else the time S3 created the object (the notification's `eventTime`); then
the per-key `sequencer` S3 gives every event of one key. Text form, stored with every row of
latest and history as `_observed`: `2026-12-02T12:00:00.123000Z` or, with a sequencer,
`2026-12-02T12:00:00.123000Z#0055AED6DCD90281E5`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# The object metadata the ingest sets on every file it writes: when it read the rows.
OBSERVED_METADATA = "observed-at"
# The audit column of latest and history rows that carries a version's observation.
OBSERVED_COLUMN = "_observed"


@dataclass(frozen=True, order=True)
class Observation:
    """A totally ordered point: time first, then S3's per-key sequencer (-1: none)."""

    at: datetime
    sequencer: int = -1

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=UTC))
        else:
            object.__setattr__(self, "at", self.at.astimezone(UTC))

    @property
    def text(self) -> str:
        stamp = self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return stamp if self.sequencer < 0 else f"{stamp}#{self.sequencer:018X}"

    @classmethod
    def parse(cls, text: str) -> Observation:
        stamp, _, sequencer = text.partition("#")
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return cls(at, int(sequencer, 16) if sequencer else -1)

    @classmethod
    def of_upload(
        cls, event_time: str | None, sequencer: str | None, created: datetime
    ) -> Observation:
        """A hand upload: S3's event time (else the object's own time), then its sequencer."""
        at = datetime.fromisoformat(event_time.replace("Z", "+00:00")) if event_time else created
        return cls(at, int(sequencer, 16) if sequencer else -1)


def observed_at_metadata(read_at: datetime) -> dict[str, str]:
    """The metadata a writer of staging files sets: when the rows were read."""
    return {OBSERVED_METADATA: Observation(read_at).text}
