"""Which object version a notification names, its bytes, its batch id and its observation.

AWS's notifications for a versioned bucket always name the version (`versionId`) and carry
`eventTime` and the per-key `sequencer`; the local runtime and the tests make moto's do the
same (ops/local/moto_edge.py), so there is one path here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from shared.commitlog import OBSERVED_AT_ARCHIVE, REPLAY_OF_METADATA, SourceRef
from shared.layout import Area, archive_prefix, batch_id, object_stamp
from shared.observation import OBSERVED_METADATA, Observation
from shared.storage import ObjectMissingError, StoredObject

if TYPE_CHECKING:
    from shared.storage import ObjectStore


@dataclass(frozen=True)
class ObjectRef:
    """One object version a notification names, and the message that named it."""

    bucket: str
    key: str
    version_id: str | None
    message_body: str
    event_time: str | None = None
    sequencer: str | None = None
    receive_count: int = 1  # SQS's ApproximateReceiveCount: this is its n-th delivery


@dataclass(frozen=True)
class SourceVersion:
    """The exact staging or baseline version being applied (or a quarantined copy of one)."""

    ref: SourceRef
    batch: str
    data: bytes

    @property
    def area(self) -> Area:
        return self.ref.area

    @property
    def key(self) -> str:
        return self.ref.key

    @property
    def observed(self) -> Observation:
        return Observation.parse(self.ref.observed)


class ReplayError(ValueError):
    """A file staged as a replay names an archive that is not there."""


def locate(store: ObjectStore, ref: ObjectRef, area: Area) -> SourceVersion | None:
    """The version the notification names; None when it is gone (its batch finished)."""
    if not ref.version_id:
        raise ValueError(
            f"notification for {ref.key!r} names no versionId (is the bucket versioned?)"
        )
    try:
        found = store.get(ref.key, ref.version_id)
    except ObjectMissingError:
        return None
    replay_of = found.metadata.get(REPLAY_OF_METADATA)
    if replay_of:
        return _replayed(store, found, area, replay_of)
    observed = found.metadata.get(OBSERVED_METADATA)
    observation = (
        Observation.parse(observed)
        if observed
        else Observation.of_upload(ref.event_time, ref.sequencer, found.last_modified)
    )
    return SourceVersion(
        ref=_source_ref(area, found, observation, found.last_modified),
        batch=batch_id(ref.version_id, None),
        data=found.data,
    )


def _replayed(store: ObjectStore, found: StoredObject, area: Area, archive: str) -> SourceVersion:
    """A file `ingestctl replay` staged again: the same batch as the one archived, observed
    when that one was (so it is an old observation and never reverts latest)."""
    table_prefix = archive_prefix(found.key.split("/", 1)[1].removesuffix(".json"))
    if not archive.startswith(table_prefix):
        raise ReplayError(f"{found.key}: replay of {archive!r}, not an archive of this table")
    try:
        metadata = store.metadata(archive)
    except ObjectMissingError:
        raise ReplayError(f"{found.key}: replay of {archive}, which does not exist") from None
    name = archive.removeprefix(table_prefix).removesuffix(".json")
    stamp, batch = name.rsplit("_", 2)[-2:]
    created = datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(
        tzinfo=found.last_modified.tzinfo
    )
    observed = metadata.get(OBSERVED_AT_ARCHIVE)
    observation = Observation.parse(observed) if observed else Observation(created)
    ref = _source_ref(area, found, observation, created).model_copy(update={"stamp": stamp})
    return SourceVersion(ref=ref, batch=batch, data=found.data)


def _source_ref(
    area: Area, found: StoredObject, observation: Observation, created: datetime
) -> SourceRef:
    assert found.version_id is not None  # read by its version id
    return SourceRef(
        area=area,
        key=found.key,
        version_id=found.version_id,
        stamp=object_stamp(created),
        last_modified=created,
        observed=observation.text,
    )
