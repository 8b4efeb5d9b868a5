"""What the history index must answer, from the log and from a full scan (for the tests and
the interleavings harness): the index's readers must give exactly the log's history, and,
once every entry is copied, exactly what reading every history object gives."""

from __future__ import annotations

from shared import history_index
from shared.commitlog import LogEntry, entries_after
from shared.history import history_row_json, load_history
from shared.history_index import checkpoint_key
from shared.history_lookup import committed_history, history_totals
from shared.reader import iter_history, latest_seq
from shared.rows import dump_lines
from shared.storage import ObjectStore
from shared.tables import TableSpec


def log_history(spec: TableSpec, entries: list[LogEntry]) -> list[str]:
    """Every entry's history rows, in the order a full scan reads their objects."""
    lines = sorted(
        (entry.history_key, i, text)
        for entry in entries
        if entry.history_key
        for i, text in enumerate(entry.history)
    )
    rows = load_history(spec, dump_lines([text for *_, text in lines]), "log")
    return [history_row_json(spec, item) for item in rows]


def scanned_history(store: ObjectStore, spec: TableSpec) -> list[str]:
    return [history_row_json(spec, h) for _, items in iter_history(store, spec) for h in items]


def index_problems(store: ObjectStore, spec: TableSpec) -> list[str]:
    """What the index's readers get wrong now (empty: nothing)."""
    problems = []
    seq, every = latest_seq(store, spec), history_index.INDEX_EVERY
    missing = [
        c for c in range(every, seq + 1, every) if not store.exists(checkpoint_key(spec.name, c))
    ]
    if missing:
        problems.append(f"latest reflects entry {seq} but checkpoints {missing} are missing")
    entries = entries_after(store, spec.name, 0)
    indexed = [history_row_json(spec, h) for h in committed_history(store, spec)]
    if indexed != log_history(spec, entries):
        problems.append(f"indexed history {len(indexed)} rows is not the log's")
    totals = (sum(1 for e in entries if e.history_key), sum(len(e.history) for e in entries))
    if history_totals(store, spec) != totals:
        problems.append(f"indexed totals {history_totals(store, spec)}, the log's {totals}")
    if all(e.history_key is None or store.exists(e.history_key) for e in entries):
        scanned = scanned_history(store, spec)
        if indexed != scanned:
            problems.append(f"indexed history {len(indexed)} rows is not a full scan's")
        objects = sum(1 for _ in iter_history(store, spec))
        if history_totals(store, spec) != (objects, len(scanned)):
            problems.append(f"indexed totals {history_totals(store, spec)}, a scan's {objects}")
    return problems
