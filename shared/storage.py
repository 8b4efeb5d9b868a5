"""The S3 adapter: the only code that talks to the bucket.

Logic code sees `StoredObject`s and typed errors, never boto3. The client is created on first
use, not at import, so tests can set up moto (or inject a faulty store) first. The endpoint
comes from boto3's own `AWS_ENDPOINT_URL` setting, which the local runtime sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# A streamed write (`BucketStore.put_stream`) goes up in parts of this size; S3 wants at
# least 5 MiB for every part but the last.
MIN_PART_BYTES = 5 * 1024 * 1024
PART_BYTES = 8 * 1024 * 1024


class PreconditionFailedError(Exception):
    """A conditional write lost a race (S3 412, or 409 on a concurrent conditional write)."""


class ObjectMissingError(Exception):
    """The key, or the named version of it, does not exist."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    etag: str
    version_id: str | None
    last_modified: datetime
    metadata: dict[str, str]


@dataclass(frozen=True)
class WriteResult:
    key: str
    etag: str
    version_id: str | None


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    etag: str
    last_modified: datetime
    is_latest: bool
    size: int


class ObjectStore(Protocol):
    """The port: what logic code may ask of a bucket (`BucketStore` is the S3 adapter)."""

    bucket: str

    def get(self, key: str, version_id: str | None = None) -> StoredObject: ...

    def get_if_exists(self, key: str) -> StoredObject | None: ...

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]: ...

    def exists(self, key: str) -> bool: ...

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> WriteResult: ...

    def versions(self, key: str) -> list[ObjectVersion]: ...

    def iter_versions(self, key: str) -> Iterator[ObjectVersion]: ...

    def delete_version(self, key: str, version_id: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def delete_keys(self, keys: list[str]) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...


# How S3 may answer a read of a key or version that is not there (`_denied_because_missing`)
_DENIED = {"AccessDenied", "403", "Forbidden"}


class BucketStore:
    """Reads and writes one bucket (satisfies `ObjectStore`)."""

    def __init__(self, bucket: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self._injected = client

    @cached_property
    def client(self) -> S3Client:
        return self._injected or boto3.client("s3")

    def get(self, key: str, version_id: str | None = None) -> StoredObject:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.get_object(**kwargs)
        except ClientError as exc:
            missing = {"NoSuchKey", "NoSuchVersion", "404", "InvalidArgument"}
            if _code(exc) in missing or self._denied_because_missing(exc, key, version_id):
                raise ObjectMissingError(f"s3://{self.bucket}/{key} ({version_id})") from None
            raise
        return StoredObject(
            key=key,
            data=response["Body"].read(),
            etag=response["ETag"],
            version_id=response.get("VersionId"),
            last_modified=response["LastModified"],
            metadata=dict(response.get("Metadata", {})),
        )

    def get_if_exists(self, key: str) -> StoredObject | None:
        try:
            return self.get(key)
        except ObjectMissingError:
            return None

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The user metadata of an object (or of one version of it), without its body."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.head_object(**kwargs)
        except ClientError as exc:
            missing = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
            if _code(exc) in missing or self._denied_because_missing(exc, key, version_id):
                raise ObjectMissingError(f"s3://{self.bucket}/{key} ({version_id})") from None
            raise
        return dict(response.get("Metadata", {}))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"} or self._denied_because_missing(
                exc, key
            ):
                return False
            raise
        return True

    def _denied_because_missing(
        self, exc: ClientError, key: str, version_id: str | None = None
    ) -> bool:
        """S3 answers a missing key with 403, not 404, to a caller that may not list the bucket
        unconditionally (our roles may list only their own prefixes). Then ask the listing,
        which those roles may make for this key: a 403 for a key that is there stays an error.

        A read of one version carries no prefix, so S3 answers a version that is gone (deleted,
        or never there) with 403 too: then the version listing of exactly this key decides. A
        version it shows (an object or a delete marker) is there, and its 403 stays an error."""
        if _code(exc) not in _DENIED:
            return False
        if version_id:
            return not self._version_listed(key, version_id)
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        return not any(item["Key"] == key for item in listed.get("Contents", []))

    def _version_listed(self, key: str, version_id: str) -> bool:
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            if any(e.get("Key") == key and e.get("VersionId") == version_id for e in entries):
                return True
        return False

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> WriteResult:
        """Write an object; `if_match` (an ETag) or `create_only` make the write conditional."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
            "Metadata": metadata or {},
        }
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if create_only:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(**kwargs)
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                raise PreconditionFailedError(f"s3://{self.bucket}/{key}: {_code(exc)}") from None
            raise
        return WriteResult(key=key, etag=response["ETag"], version_id=response.get("VersionId"))

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/json",
        part_bytes: int = PART_BYTES,
    ) -> WriteResult:
        """Write an object from pieces, holding one part in memory, not the object: a plain
        `put` while it stays under one part, else a multipart upload of parts of exactly
        `part_bytes` (the same bytes give the same parts, so the same ETag), completed only
        when the pieces ran out. Anything raised meanwhile, by S3 or by whatever makes the
        pieces, leaves the upload incomplete: no object is written, the error goes on. An
        incomplete upload is never an object (no reader, no notification sees it); the
        bucket's lifecycle rule (`abort-incomplete-uploads`) removes its parts. (An abort here
        would free them at once but needs s3:AbortMultipartUpload, which no role has yet.)"""
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"parts must hold at least {MIN_PART_BYTES} bytes (S3's minimum)")
        pieces = iter(chunks)
        buffer = bytearray()
        for chunk in pieces:
            buffer += chunk
            if len(buffer) > part_bytes:
                break
        else:  # it all fits one part
            return self.put(key, bytes(buffer), metadata=metadata, content_type=content_type)
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=metadata or {}
        )
        return self._upload_parts(key, upload["UploadId"], buffer, pieces, part_bytes)

    def _upload_parts(
        self,
        key: str,
        upload_id: str,
        buffer: bytearray,
        pieces: Iterator[bytes],
        part_bytes: int,
    ) -> WriteResult:
        parts: list[CompletedPartTypeDef] = []

        def send(data: bytes) -> None:
            number = len(parts) + 1
            sent = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})

        while True:
            while len(buffer) > part_bytes:
                send(bytes(buffer[:part_bytes]))
                del buffer[:part_bytes]
            chunk = next(pieces, None)
            if chunk is None:
                break
            buffer += chunk
        send(bytes(buffer))  # the last part, at most part_bytes (S3 allows it smaller)
        done = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return WriteResult(key=key, etag=done["ETag"], version_id=done.get("VersionId"))

    def versions(self, key: str) -> list[ObjectVersion]:
        """Every version of exactly `key` (not of keys it is a prefix of), newest first."""
        return list(self.iter_versions(key))

    def iter_versions(self, key: str) -> Iterator[ObjectVersion]:
        """Like `versions`, page by page, so a caller that stops early lists no more."""
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for version in page.get("Versions", []):
                if version["Key"] != key:
                    continue
                yield ObjectVersion(
                    key=key,
                    version_id=version["VersionId"],
                    etag=version["ETag"],
                    last_modified=version["LastModified"],
                    is_latest=version["IsLatest"],
                    size=version["Size"],
                )

    def delete_version(self, key: str, version_id: str) -> None:
        """Delete exactly one version; never a bare delete (that would add a delete marker)."""
        self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)

    def delete(self, key: str) -> None:
        """Remove a key from view (a delete marker in a versioned bucket; versions are kept)."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_if_match(self, key: str, etag: str) -> None:
        """Remove a key from view only if it is still the object read at `etag` (S3's
        conditional delete); PreconditionFailedError if it changed or went meanwhile."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412", "NoSuchKey", "404"}:
                raise PreconditionFailedError(f"s3://{self.bucket}/{key}: {_code(exc)}") from None
            raise

    def delete_keys(self, keys: list[str]) -> None:
        """Bare deletes of many keys, a request per 1000 (each leaves a delete marker)."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True},
            )

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
