"""S3 answers a GET or HEAD of a missing key with 403 (not 404) when the caller may list the
bucket only under prefix conditions, as our roles may; moto always says 404, so the 403 is
injected here the way S3 sends it."""

import boto3
import pytest
from botocore.exceptions import ClientError

from shared.storage import BucketStore
from tests.integration.merge_pipeline import s3_answer

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
