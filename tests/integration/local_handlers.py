"""Small handlers for testing the local dispatcher (the dispatcher is what is under test).

They run in the dispatcher's function processes, so everything they report goes through AWS
(the local endpoint): they write what they saw to the bucket, as a real handler would.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3


def record_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Succeeds; writes the event and its environment to `_seen/<function>/<request id>.json`."""
    s3 = boto3.client("s3")
    seen = {
        "event": event,
        "env": {k: os.environ.get(k) for k in ("TABLE_NAME", "DLQ_URL", "BUCKET_NAME")},
        "function": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
    s3.put_object(
        Bucket=os.environ["BUCKET_NAME"],
        Key=f"_seen/{context.function_name}/{context.aws_request_id}.json",
        Body=json.dumps(seen).encode(),
    )
    return {"batchItemFailures": []}


def fail_bad_keys(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports as failed every record whose message body contains the word "bad"."""
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["messageId"]} for r in event["Records"] if "bad" in r["body"]
        ]
    }


def raise_always(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("this handler always fails")


def start_then_hang(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Writes `_started/<function>` and then runs past any timeout (an invocation in flight)."""
    boto3.client("s3").put_object(
        Bucket=os.environ["BUCKET_NAME"], Key=f"_started/{context.function_name}", Body=b""
    )
    time.sleep(3600)
    return {"batchItemFailures": []}
