"""How long the ingest bucket keeps a noncurrent object version: as long as the protocol may
still read it, no longer (docs/merge_protocol.md, "Retention of noncurrent versions").

One definition for the stack's lifecycle rules (`infra/ingest_bucket.py`) and the local
runtime's lifecycle player (`ops/local/lifecycle.py`), so the two cannot drift apart.

What reads a version that is no longer current:
- **staging/, baseline/**: the merge reads the exact version its notification names, and a
  staging key may be overwritten before that merge runs. The version is needed while a
  message can name it: its first life in the queue and then the DLQ (a standard queue's DLQ
  keeps the message's original enqueue time, so both together last the longer retention),
  and one more after an operator's redrive (a redrive sends a new message). A version gone
  under a live message is acknowledged as processed, its rows lost, so this is the one long
  rule. The noncurrent clock starts at the overwrite, never before the message was sent.
- **latest/** partitions: a reader holding a manifest reads the partitions it names by
  versionId, also after a later merge replaced them, for as long as that reader runs: at most
  the longest function timeout (an operator's command, minutes). The single
  `latest/<t>.json`, the manifests, `_state/`, quarantine copies that left quarantine and
  warehouse files are read only as current objects; history/ and archive/ are create-only.
  So every other area keeps noncurrent versions for the shortest time S3's lifecycle knows.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import deployment_facts as facts
from shared.layout import TRIGGER_AREAS, Area

# S3 lifecycle rules count whole days (and round up to the next midnight UTC).
DAY_SECONDS = 24 * 60 * 60
# The longest any reader of a manifest runs, holding it: the functions' longest timeout.
LONGEST_READ_SECONDS = max(facts.MERGE.timeout_seconds, facts.TRANSFORM.timeout_seconds)
# The shortest noncurrent retention S3 accepts; it must cover the longest read.
READ_WINDOW_DAYS = 1
# A message's first life (queue, then DLQ) and one more after a redrive.
MESSAGE_LIFE_DAYS = (
    max(facts.MERGE_QUEUE.retention_seconds, facts.DLQ.retention_seconds) // facts.DAY_SECONDS
)
TRIGGER_VERSION_DAYS = 2 * MESSAGE_LIFE_DAYS

assert READ_WINDOW_DAYS * DAY_SECONDS >= LONGEST_READ_SECONDS


@dataclass(frozen=True)
class NoncurrentRule:
    """Expire a version under `prefix` once it has been noncurrent for `days` (S3's
    NoncurrentVersionExpiration), and a delete marker once no version is left behind it."""

    area: Area
    days: int

    @property
    def rule_id(self) -> str:
        return f"expire-noncurrent-{self.area}"

    @property
    def prefix(self) -> str:
        return f"{self.area}/"


# One rule per area, prefixes disjoint: where two S3 rules overlap the shorter expiry wins,
# so a bucket-wide short rule would cut the trigger areas' long one.
NONCURRENT_RULES = tuple(
    NoncurrentRule(area, TRIGGER_VERSION_DAYS if area in TRIGGER_AREAS else READ_WINDOW_DAYS)
    for area in Area
)
