"""`BucketStore.put_stream` on moto: one plain put while small, exact parts when large, and
nothing written whenever anything fails meanwhile (the upload stays incomplete, never an
object)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from shared.storage import MIN_PART_BYTES, BucketStore


class PiecesFailedError(Exception):
    pass


# -- the streamed put ------------------------------------------------------------------------
@pytest.fixture
def bucket(aws: None) -> BucketStore:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="b-1", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    return BucketStore("b-1")


def _pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    at = 0
    for size in sizes * (len(data) // max(1, sum(sizes)) + 1):
        if at >= len(data):
            return
        yield data[at : at + size]
        at += size


def _uploads(store: BucketStore) -> list[Any]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


def test_a_small_streamed_put_is_one_plain_put(bucket):
    data = b"[\n" + b"x" * 1000 + b"\n]\n"
    written = bucket.put_stream("k.json", _pieces(data, [7, 300]), metadata={"observed-at": "t"})
    stored = bucket.get("k.json")
    assert stored.data == data
    assert stored.metadata == {"observed-at": "t"}
    assert written.etag == stored.etag == '"' + hashlib.md5(data).hexdigest() + '"'


def test_a_large_streamed_put_goes_up_in_parts_of_exactly_the_part_size(bucket):
    data = random.Random(1).randbytes(2 * MIN_PART_BYTES + 12_345)
    pieces = _pieces(data, [65_537, 1, 1_000_003])
    first = bucket.put_stream("big.json", pieces, metadata={"a": "1"}, part_bytes=MIN_PART_BYTES)
    stored = bucket.get("big.json")
    assert stored.data == data
    assert stored.metadata == {"a": "1"}
    assert first.etag.endswith('-3"')
    # Other pieces, the same bytes: the same parts, so the same ETag.
    pieces = _pieces(data, [MIN_PART_BYTES - 1])
    second = bucket.put_stream("big.json", pieces, metadata={"a": "1"}, part_bytes=MIN_PART_BYTES)
    assert second.etag == first.etag
    assert _uploads(bucket) == []


def test_a_failure_while_streaming_writes_nothing(bucket):
    bucket.put("big.json", b"before")

    def pieces() -> Iterator[bytes]:
        yield b"y" * (MIN_PART_BYTES + 1)
        yield b"y" * MIN_PART_BYTES
        raise PiecesFailedError("the rows went bad")

    with pytest.raises(PiecesFailedError):
        bucket.put_stream("big.json", pieces(), part_bytes=MIN_PART_BYTES)
    assert bucket.get("big.json").data == b"before"
    assert len(bucket.versions("big.json")) == 1
    # Left incomplete, for the lifecycle rule: never an object.
    assert [u["Key"] for u in _uploads(bucket)] == ["big.json"]


class _FailingCompletion:
    """An S3 client whose CompleteMultipartUpload times out; every other call is real."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        raise TimeoutError("killed before the upload was completed")


def test_an_s3_failure_at_completion_writes_nothing(bucket):
    store = BucketStore(bucket.bucket, client=_FailingCompletion(bucket.client))  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        store.put_stream("big.json", iter([b"z" * (MIN_PART_BYTES + 1)]), part_bytes=MIN_PART_BYTES)
    assert not bucket.exists("big.json")


def test_parts_smaller_than_s3_allows_are_refused(bucket):
    with pytest.raises(ValueError, match="at least"):
        bucket.put_stream("k.json", iter([b"x"]), part_bytes=MIN_PART_BYTES - 1)
