"""S3 answers a GET or HEAD of a missing key with 403 (not 404) when the caller may list the
bucket only under prefix conditions, as our roles may; moto always says 404, so the 403 is
injected here the way S3 sends it."""

from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from services.merge import handler as merge_handler
from shared.rows import row_json
from shared.schemas import Staff
from shared.storage import BucketStore
from tests.integration.merge_pipeline import BUCKET as PIPELINE_BUCKET
from tests.integration.merge_pipeline import Pipeline, s3_answer

BUCKET = "denied-test"
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


@pytest.fixture
def store(aws):
    client = boto3.client("s3", region_name="eu-west-2")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    client.put_object(Bucket=BUCKET, Key="state/present.json", Body=b"{}")

    def deny_object_reads(request, **_):
        # GET and HEAD of objects are refused; the listing (the bucket's own URL) is not
        if request.method in ("GET", "HEAD") and "/state/" in request.url:
            return s3_answer(request, 403, b"" if request.method == "HEAD" else DENIED)
        return None

    client.meta.events.register_first("before-send.s3", deny_object_reads)
    return BucketStore(BUCKET, client)


def test_a_403_for_a_key_the_listing_does_not_show_means_missing(store):
    assert store.get_if_exists("state/missing.json") is None
    assert store.exists("state/missing.json") is False


def test_a_403_for_a_key_that_is_there_stays_an_error(store):
    with pytest.raises(ClientError, match=r"403|AccessDenied|Forbidden"):
        store.get_if_exists("state/present.json")
    with pytest.raises(ClientError, match=r"403|AccessDenied|Forbidden"):
        store.exists("state/present.json")


T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(key, minutes, name="Jeremie"):
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=T0,
        last_updated=T0 + timedelta(minutes=minutes),
    )


# ---- the merge, with S3 answering 403 for whatever is missing --------------------------------


def answer_403_for_what_is_missing(client, plain):
    """Make `client` see S3 as our roles do: a GET or HEAD of a key, or of a version, that
    is not there is answered 403, not 404 (`plain`, an unhooked client, says what is there).
    Listings are answered as they are. Returns what was denied ("GET key?versionId")."""
    denied: list[str] = []

    def deny_if_missing(request, **_):
        if request.method not in ("GET", "HEAD"):
            return None
        parts = urlsplit(request.url)
        query = parse_qs(parts.query)
        key = unquote(parts.path).lstrip("/").removeprefix(f"{PIPELINE_BUCKET}/")
        if not key or "list-type" in query or "versions" in query:
            return None
        version = {"VersionId": query["versionId"][0]} if "versionId" in query else {}
        try:
            plain.head_object(Bucket=PIPELINE_BUCKET, Key=key, **version)
        except ClientError:
            denied.append(f"{request.method} {key}{'?versionId' if version else ''}")
            return s3_answer(request, 403, b"" if request.method == "HEAD" else DENIED)
        return None

    client.meta.events.register_first("before-send.s3", deny_if_missing)
    return denied


def denied_service(pipeline):
    """A merge service that sees S3 as our roles do; and the reads it was answered 403."""
    service, hooks = pipeline.hooked_service()
    return service, answer_403_for_what_is_missing(hooks.client, pipeline.s3)


def test_a_merge_whose_missing_keys_are_answered_403_merges_as_usual(aws, layout):
    """Every merge reads keys that are not there (latest before the first merge, the log
    entry after the head, the archive of a batch not archived yet)."""
    pipeline = Pipeline("staff")
    service, denied = denied_service(pipeline)
    pipeline.use(service)
    pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
    assert pipeline.deliver().failed == []
    pipeline.stage([staff(2, 20, name="Jo"), staff(3, 0)])
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == [
        row_json(pipeline.spec, r) for r in (staff(1, 0), staff(2, 20, name="Jo"), staff(3, 0))
    ]
    assert list(pipeline.history_texts()) == [row_json(pipeline.spec, staff(2, 0))]
    assert pipeline.staging_versions() == pipeline.baseline_versions() == []
    assert merge_handler.get_service() is service
    assert f"GET {pipeline.commit_key}" in denied  # no latest before the first merge


@pytest.mark.xfail(
    strict=True,
    reason="merge bug: BucketStore.get resolves a 403 by a listing only for unversioned reads, "
    "so a redelivered notification whose version the merge deleted fails its record (and "
    "reaches the DLQ, pausing ingest) though docs/merge_protocol.md says case 8 is closed",
)
def test_a_redelivery_after_the_version_was_deleted_answered_403_is_acknowledged(aws, layout):
    """S3 answers a GET of a deleted version 403 to a role without unconditional listing:
    the batch finished (issue 14, case 8); the message must not go to the DLQ."""
    pipeline = Pipeline("staff")
    pipeline.stage([staff(1, 0)])
    (message,) = pipeline.receive_records()
    assert pipeline.invoke([message]).failed == []
    before, ids = pipeline.all_object_versions(), pipeline.event_ids()

    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=message["Body"])
    (again,) = pipeline.receive_records()
    service, denied = denied_service(pipeline)
    assert pipeline.invoke_with(service, [again]).failed == []
    assert denied[0] == "GET staging/staff.json?versionId"
    assert pipeline.all_object_versions() == before
    assert pipeline.event_ids() == ids
