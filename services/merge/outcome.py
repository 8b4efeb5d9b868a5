"""What applying a batch decided: everything the finishing steps and the events need."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.merge.source import SourceVersion
from shared.commitlog import Layout, LogEntry, MergeStatus
from shared.events import MergeCounts
from shared.quarantine import QuarantineRecord


@dataclass(frozen=True)
class Outcome:
    status: MergeStatus
    source: SourceVersion
    rows: int = 0
    counts: MergeCounts = field(default_factory=MergeCounts)
    keys_written: list[int] = field(default_factory=list)
    keys_deleted: list[int] = field(default_factory=list)
    history_key: str | None = None
    seq: int | None = None  # the log entry that committed the batch
    quarantine: QuarantineRecord | None = None
    retired: list[str] = field(default_factory=list)  # latest objects its entry replaced
    # this invocation just committed it: nothing after the commit has run yet
    fresh: bool = False
    # latest's form after it (its events name the file or the manifest); None: not read
    layout: Layout | None = None

    @classmethod
    def committed(cls, source: SourceVersion, entry: LogEntry, *, fresh: bool) -> Outcome:
        return cls(
            status=MergeStatus.COMMITTED,
            source=source,
            rows=entry.rows,
            counts=entry.counts,
            keys_written=entry.keys_written,
            keys_deleted=entry.keys_deleted,
            history_key=entry.history_key,
            seq=entry.seq,
            retired=entry.replaced,
            fresh=fresh,
            layout=entry.layout,
        )
