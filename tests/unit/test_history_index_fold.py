"""The history index's folds: over many checkpoints, whichever leaves and buckets fold when,
a checkpoint's leaves and deltas hold every history row exactly once.

The real write path (`Indexer.extend`, one checkpoint per entry here) on local files; tiny
leaves, buckets, delta chunks and cycles so that units fold at different checkpoints, split,
and read rows pending in several deltas."""

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.history import T0, _version, entry_of
from bench.merge import BUCKET, TABLE
from ops.folder_store import FolderStore
from services.merge.indexer import Indexer
from shared import history_frames, history_index
from shared.history_frames import Directory, bucket_range
from shared.history_index import BucketRef, IndexCheckpoint, LeafRef, Line, entry_lines
from shared.history_lookup import Deltas, index_lines
from shared.observation import Observation
from shared.tables import get_table

SPEC = get_table(TABLE)


@pytest.fixture
def tiny_index(monkeypatch):
    monkeypatch.setattr(history_index, "INDEX_EVERY", 1)
    monkeypatch.setattr(history_index, "LEAF_ROWS", 3)
    monkeypatch.setattr(history_index, "DELTA_ROWS", 2)
    monkeypatch.setattr(history_frames, "FRAME_KEYS", 3)


def changes(seq: int, rng: random.Random) -> list[tuple[int, object, Observation, object]]:
    """Up to 5 of 24 keys updated at entry `seq`, each sending its row to history."""
    keys = sorted(rng.sample(range(1, 25), rng.randint(0, 5)))
    return [(key, _version(key, seq), Observation(T0), _version(key, seq + 1)) for key in keys]


def pending_ok(checkpoint: IndexCheckpoint, every: list[tuple[int, Line]]) -> list[str]:
    """Each unit's `pending` counts exactly the rows after the entry it holds them through."""
    wrong = []
    units: list[tuple[LeafRef | BucketRef, int, int]]
    units = [(ref, ref.low, ref.high) for ref in checkpoint.leaves]
    units += [(ref, *bucket_range(ref.bucket)) for ref in checkpoint.frames or []]
    for ref, low, high in units:
        after = checkpoint.through(ref)
        count = sum(1 for seq, line in every if seq > after and low <= line.key <= high)
        if count != ref.pending:
            wrong.append(f"{ref} pending {ref.pending}, rows after {after}: {count}")
    return wrong


def directories_ok(
    store: FolderStore, checkpoint: IndexCheckpoint, every: list[tuple[int, Line]]
) -> list[str]:
    """Each bucket's directory names the keys with rows through the entry it is folded
    through: no folded row left out of the index by time."""
    wrong = []
    for ref in checkpoint.frames or []:
        low, high = bucket_range(ref.bucket)
        through = checkpoint.through(ref)
        keys = {line.key for seq, line in every if seq <= through and low <= line.key <= high}
        named = set()
        if ref.key is not None:
            directory = Directory.model_validate_json(store.get(ref.key).data)
            named = {key for key, _, _ in directory.tails}
        if named != keys:
            wrong.append(f"bucket {ref.bucket} through {through} names {named}, has {keys}")
    return wrong


@pytest.mark.usefixtures("tiny_index")
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32), fold_every=st.sampled_from([2, 3, 5]))
def test_every_row_is_in_one_leaf_or_delta_whatever_folded(tmp_path: Path, seed, fold_every):
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory(dir=tmp_path) as root:
        patch.setattr(history_index, "FOLD_EVERY", fold_every)  # each example its own bucket
        check_a_run(Path(root), random.Random(seed), fold_every)


def check_a_run(root: Path, rng: random.Random, fold_every: int) -> None:
    store = FolderStore(root, BUCKET)
    indexer = Indexer(store, SPEC, lambda seq: None)
    checkpoint = IndexCheckpoint.empty(SPEC.name)
    every: list[tuple[int, Line]] = []
    for seq in range(1, 4 * fold_every + 3):
        entry = entry_of(seq, changes(seq, rng))[0]
        every += [(seq, line) for line in entry_lines(SPEC, entry)]
        checkpoint = indexer.extend(checkpoint, [entry])
        deltas = Deltas(store, SPEC.name, checkpoint.deltas)
        assert sorted(index_lines(store, checkpoint, deltas, None)) == sorted(
            line for _, line in every
        )
        asked = set(rng.sample(range(0, 26), 4))
        found = [
            line for line in index_lines(store, checkpoint, deltas, asked) if line.key in asked
        ]
        assert sorted(found) == sorted(line for _, line in every if line.key in asked)
        assert pending_ok(checkpoint, every) == []
        assert directories_ok(store, checkpoint, every) == []
        assert len(checkpoint.deltas) <= 2 * fold_every
