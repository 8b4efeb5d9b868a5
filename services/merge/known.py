"""Which versions committed history already holds, for the few keys a plan asks about.

Committed history is what latest's entry had copied (every history object of entries up to
the state's head exists, and so does the history index's checkpoint at or below it) plus the
entries the state applied since (not copied yet). It is read from that checkpoint's leaves
for these keys and the entries after it (shared/history_lookup.py); before a table's first
checkpoint, from its entries and the history objects older than the log. No object of an
uncommitted merge is ever there to be trusted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.merge.rules import Known, primary_key
from services.merge.state import TableState
from shared.commitlog import entry_key
from shared.history import HistoryRow, load_history
from shared.history_lookup import open_view
from shared.rows import dump_lines, row_json
from shared.versions import Version

if TYPE_CHECKING:
    from shared.storage import ObjectStore


def known_history(store: ObjectStore, state: TableState, keys: set[int]) -> Known:
    """The row texts history holds for `keys` as of the state's entry, and their versions."""
    spec = state.spec
    known = Known()

    def take(items: list[HistoryRow]) -> None:
        for h in items:
            key = primary_key(spec, h.row)
            if key in keys:
                known.texts.add(row_json(spec, h.row))
                known.versions.setdefault(key, []).append(Version(h.row, h.observed, h.change))

    head = state.seq - len(state.pending)
    take(open_view(store, spec, head, through=head).rows(keys))
    for entry in state.pending:
        if entry.history:
            source = entry_key(spec.name, entry.seq)
            take(load_history(spec, dump_lines(entry.history), source))
    return known
