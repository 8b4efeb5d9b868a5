"""Which versions committed history already holds, for the few keys a plan asks about.

Committed history is the history objects (each copied from its entry before the latest that
reflects the entry, so every entry up to the state's head has one) plus the entries the state
applied since (not copied yet). No object of an uncommitted merge is ever there to be trusted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.merge.rules import Known, primary_key
from services.merge.state import TableState
from shared.commitlog import entry_key
from shared.history import HistoryRow, load_history
from shared.layout import history_prefix
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

    for key in store.keys(history_prefix(spec.name)):
        take(load_history(spec, store.get(key).data, key))
    for entry in state.pending:
        if entry.history:
            source = entry_key(spec.name, entry.seq)
            take(load_history(spec, dump_lines(entry.history), source))
    return known
