"""S3 answers a GET or HEAD of a missing key with 403 (not 404) when the caller may list the
bucket only under prefix conditions, as our roles may; moto always says 404, so the 403 is
injected here the way S3 sends it."""

from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from services.merge import handler as merge_handler
from shared.rows import row_json
from shared.storage import BucketStore, ObjectMissingError, ObjectStore
from tests.integration.merge_pipeline import BUCKET as PIPELINE_BUCKET
from tests.integration.merge_pipeline import Pipeline, s3_answer
from tests.rows import staff

BUCKET = "denied-test"
VERSIONED = "denied-versions-test"
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


# ---- reads of one version: S3 answers 403 for a version that is gone ------------------------

_check: ObjectStore = BucketStore("x")  # the adapter satisfies the port (checked by mypy)


@pytest.fixture
def versioned(aws):
    """A versioned bucket whose reads of a version (GET or HEAD with versionId) are refused
    with 403, as S3 refuses them to a role that may list only some prefixes; reads of a key
    and every listing are answered as they are. Returns the store, the methods refused and
    what was put: {name: (key, version id)}."""
    client = boto3.client("s3", region_name="eu-west-2")
    client.create_bucket(
        Bucket=VERSIONED, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    client.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
    put = {}
    for name, key in [
        ("old", "state/a.json"),
        ("current", "state/a.json"),
        ("longer key", "state/a.json.bak"),  # listed by Prefix=state/a.json: not a version of it
        ("deleted", "state/a.json"),
    ]:
        version = client.put_object(Bucket=VERSIONED, Key=key, Body=name.encode())["VersionId"]
        put[name] = (key, version)
    client.delete_object(Bucket=VERSIONED, Key="state/a.json", VersionId=put["deleted"][1])
    client.put_object(Bucket=VERSIONED, Key="state/b.json", Body=b"b")
    marker = client.delete_object(Bucket=VERSIONED, Key="state/b.json")["VersionId"]
    put["delete marker"] = ("state/b.json", marker)
    denied = []

    def deny_version_reads(request, **_):
        if request.method in ("GET", "HEAD") and "versionId=" in request.url:
            denied.append(request.method)
            return s3_answer(request, 403, b"" if request.method == "HEAD" else DENIED)
        return None

    hooked = boto3.client("s3", region_name="eu-west-2")
    hooked.meta.events.register_first("before-send.s3", deny_version_reads)
    return BucketStore(VERSIONED, hooked), denied, put


def test_a_403_for_a_version_the_version_listing_does_not_show_means_missing(versioned):
    store, denied, put = versioned
    key, deleted = put["deleted"]
    with pytest.raises(ObjectMissingError):
        store.get(key, deleted)
    with pytest.raises(ObjectMissingError):
        store.metadata(key, deleted)
    assert denied == ["GET", "HEAD"]  # answered 403, not 404: the listing decided


def test_a_403_for_a_version_of_a_longer_key_is_missing_for_this_key(versioned):
    """The listing by Prefix=key shows the versions of longer keys too: only this key's count."""
    store, _, put = versioned
    _, other = put["longer key"]
    with pytest.raises(ObjectMissingError):
        store.get("state/a.json", other)
    with pytest.raises(ObjectMissingError):
        store.metadata("state/a.json", other)


@pytest.mark.parametrize("name", ["old", "current", "longer key", "delete marker"])
def test_a_403_for_a_version_that_is_listed_stays_an_error(versioned, name):
    store, _, put = versioned
    key, version = put[name]
    with pytest.raises(ClientError, match=r"403|AccessDenied|Forbidden"):
        store.get(key, version)
    with pytest.raises(ClientError, match=r"403|AccessDenied|Forbidden"):
        store.metadata(key, version)


def test_a_403_for_a_version_is_resolved_across_pages_of_the_listing(versioned):
    store, _, put = versioned
    plain = boto3.client("s3", region_name="eu-west-2")
    key, old = put["old"]
    for number in range(3):
        plain.put_object(Bucket=VERSIONED, Key=key, Body=f"newer {number}".encode())
    pages = []

    def small_pages(params, **_):
        params["MaxKeys"] = 2  # the oldest version is on the last page
        pages.append(params.get("VersionIdMarker"))

    store.client.meta.events.register("before-parameter-build.s3.ListObjectVersions", small_pages)
    with pytest.raises(ClientError, match=r"403|AccessDenied|Forbidden"):
        store.get(key, old)
    assert len(pages) > 1
    plain.delete_object(Bucket=VERSIONED, Key=key, VersionId=old)
    with pytest.raises(ObjectMissingError):
        store.get(key, old)


def test_other_errors_for_a_version_are_not_resolved_by_a_listing(aws):
    """Only a 403 asks the listing: any other error of a version read is raised as it is."""
    client = boto3.client("s3", region_name="eu-west-2")
    client.create_bucket(
        Bucket=VERSIONED, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    invalid = b"<Error><Code>InvalidRequest</Code><Message>no</Message></Error>"

    def refuse_version_reads(request, **_):
        return s3_answer(request, 400, invalid) if "versionId=" in request.url else None

    client.meta.events.register_first("before-send.s3", refuse_version_reads)
    listings = []
    client.meta.events.register("before-call.s3.ListObjectVersions", lambda **_: listings.append(1))
    with pytest.raises(ClientError, match="InvalidRequest"):
        BucketStore(VERSIONED, client).get("state/a.json", "v1")
    assert listings == []


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
