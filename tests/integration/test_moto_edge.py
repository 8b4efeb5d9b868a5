"""ops/local/moto_edge.py: moto's S3 notifies and writes conditionally as AWS's does."""

import json
import re
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.s3 import notifications
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from ops.local.moto_edge import aws_like_moto, is_applied
from ops.local.runtime import free_port
from tests.integration.merge_pipeline import REGION

BUCKET = "moto-edge-test"
KEY = "staging/staff.json"


def notifying_bucket(versioned=True, **client_args):
    """A bucket whose ObjectCreated events go to a queue: (s3, sqs, queue url)."""
    s3 = boto3.client("s3", region_name=REGION, **client_args)
    sqs = boto3.client("sqs", region_name=REGION, **client_args)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    if versioned:
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    url = sqs.create_queue(QueueName="moto-edge")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn["QueueArn"], "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return s3, sqs, url


def notified_objects(sqs, url):
    """The `s3.object` of every record queued so far (not S3's test event), in order."""
    objects = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            objects += [r["s3"]["object"] for r in json.loads(message["Body"]).get("Records", [])]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return objects


def test_a_put_is_notified_with_its_version_and_an_increasing_sequencer(aws):
    s3, sqs, url = notifying_bucket()
    puts = [s3.put_object(Bucket=BUCKET, Key=KEY, Body=body) for body in (b"[]", b"[ ]")]
    first, second = notified_objects(sqs, url)
    assert [first["versionId"], second["versionId"]] == [p["VersionId"] for p in puts]
    assert first["eTag"] == puts[0]["ETag"].strip('"')
    for obj in (first, second):
        assert re.fullmatch(r"[0-9A-F]{18}", obj["sequencer"])
    assert second["sequencer"] > first["sequencer"]  # as strings (fixed width) and as numbers
    assert int(second["sequencer"], 16) > int(first["sequencer"], 16)


def test_the_event_time_has_milliseconds(aws):
    s3, sqs, url = notifying_bucket()
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"[]")
    queued = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    records = [r for m in queued["Messages"] for r in json.loads(m["Body"]).get("Records", [])]
    (record,) = records
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["eventTime"])


def test_an_unversioned_bucket_names_no_version(aws):
    s3, sqs, url = notifying_bucket(versioned=False)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"[]")
    (obj,) = notified_objects(sqs, url)
    assert "versionId" not in obj
    assert obj["sequencer"]


def create_only_race(s3, monkeypatch, writers=8):
    """`writers` threads put one key at once with If-None-Match: *, moto made slow between its
    check and its write (else the race is rarely seen): what each got."""
    write = S3Backend.put_object

    def slow_write(*args, **kwargs):
        time.sleep(0.05)
        return write(*args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", slow_write)
    start = threading.Barrier(writers)
    outcomes = []

    def put(n):
        start.wait()
        try:
            s3.put_object(Bucket=BUCKET, Key="claim", Body=str(n).encode(), IfNoneMatch="*")
            outcomes.append("written")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=put, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_concurrent_create_only_puts_let_exactly_one_through(aws, monkeypatch):
    s3, _, _ = notifying_bucket()
    assert create_only_race(s3, monkeypatch) == ["PreconditionFailed"] * 7 + ["written"]


def test_unpatched_moto_lets_concurrent_create_only_puts_through(aws_env, monkeypatch):
    """Why the patch exists: moto checks, then writes."""
    with mock_aws():
        s3, _, _ = notifying_bucket()
        assert create_only_race(s3, monkeypatch).count("written") > 1


def listing_peak_bytes(s3):
    """Peak Python memory of one version listing of a bucket holding 20 x 2 MB, and its
    answer (versions and delete markers as (key, IsLatest))."""
    body = b"x" * (2 * 2**20)
    for _ in range(10):
        s3.put_object(Bucket=BUCKET, Key="latest/a.json", Body=body)
        s3.put_object(Bucket=BUCKET, Key="latest/b.json", Body=body)
    s3.delete_object(Bucket=BUCKET, Key="latest/b.json")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        listed = s3.list_object_versions(Bucket=BUCKET, Prefix="latest/")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    answer = (
        sorted((v["Key"], v["IsLatest"]) for v in listed["Versions"]),
        sorted((m["Key"], m["IsLatest"]) for m in listed["DeleteMarkers"]),
    )
    return peak, answer


def test_a_version_listing_copies_no_object_bytes(aws):
    s3, _, _ = notifying_bucket()
    peak, (versions, markers) = listing_peak_bytes(s3)
    assert peak < 4 * 2**20  # the bucket holds 40 MB
    assert versions == sorted(
        [("latest/a.json", True)] + [("latest/a.json", False)] * 9 + [("latest/b.json", False)] * 10
    )
    assert markers == [("latest/b.json", True)]


def test_unpatched_moto_copies_the_whole_bucket_per_version_listing(aws_env):
    """Why the patch exists: moto deep-copies every version, bytes included."""
    with mock_aws():
        s3, _, _ = notifying_bucket()
        peak, _ = listing_peak_bytes(s3)
        assert peak > 40 * 2**20


def test_moto_is_restored_after_the_block_and_only_after_the_outermost(aws_env):
    originals = notifications.send_event, notifications._get_s3_event, S3Response.put_object
    assert not is_applied()
    with aws_like_moto():
        assert is_applied()
        with aws_like_moto():
            assert is_applied()
        assert is_applied()  # the inner block leaves the outer one's patches alone
    assert not is_applied()
    assert (notifications.send_event, notifications._get_s3_event, S3Response.put_object) == (
        originals
    )
    with mock_aws():  # and moto sends its own notifications again
        s3, sqs, url = notifying_bucket()
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"[]")
        (obj,) = notified_objects(sqs, url)
        assert "versionId" not in obj
        assert "sequencer" not in obj


def test_moto_is_restored_when_the_block_raises(aws_env):
    with pytest.raises(RuntimeError), aws_like_moto():
        raise RuntimeError("boom")
    assert not is_applied()


def test_install_is_idempotent_and_outlives_blocks():
    """In a process of its own: install() is for good."""
    code = (
        "from ops.local.moto_edge import aws_like_moto, install, is_applied\n"
        "install(); install()\n"
        "with aws_like_moto():\n"
        "    pass\n"
        "assert is_applied()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_moto_server_in_this_process_notifies_as_aws(aws_env):
    """The local runtime's way: moto's server, in-process, under the same patches."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    with aws_like_moto():
        server.start()
        try:
            s3, sqs, url = notifying_bucket(endpoint_url=f"http://127.0.0.1:{port}")
            put = s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"[]")
            (obj,) = notified_objects(sqs, url)
        finally:
            endpoint = f"http://127.0.0.1:{port}/moto-api/reset"  # moto's state is per process
            urllib.request.urlopen(urllib.request.Request(endpoint, method="POST")).close()
            server.stop()
    assert obj["versionId"] == put["VersionId"]
    assert obj["sequencer"]
