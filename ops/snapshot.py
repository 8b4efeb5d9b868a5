"""A bucket's objects kept in a folder, one file per key: what the demo leaves behind.

The local runtime's bucket lives in moto's memory and goes when the demo ends; the demo copies
the objects `ingestctl query` reads (latest, the warehouse, the schema state) into `.demo/bucket`
first, so `ingestctl query --snapshot .demo/bucket "SQL"` reads them after it, through the
same `ObjectStore` port as a real bucket (ops/folder_store.py). A snapshot keeps each key's
current bytes and metadata only: no versions (a read of a version gives the one copy).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from ops.folder_store import FolderStore
from shared.layout import Area
from shared.storage import ObjectStore

# What a query reads: latest, the warehouse and change tables, the tables' schema state.
QUERY_PREFIXES = (f"{Area.LATEST}/", f"{Area.WAREHOUSE}/", f"{Area.STATE}/schema/")
DEMO_SNAPSHOT = Path(".demo/bucket")


def copy_objects(
    source: ObjectStore, folder: Path, prefixes: Iterable[str] = QUERY_PREFIXES
) -> int:
    """Replace `folder` with the current objects of `source` under `prefixes`; how many."""
    if folder.exists():
        shutil.rmtree(folder)
    target = FolderStore(folder, bucket=folder.name)
    copied = 0
    for prefix in prefixes:
        for key in list(source.keys(prefix)):
            found = source.get(key)
            target.put(key, found.data, metadata=found.metadata)
            copied += 1
    return copied
