"""moto in this process: the one environment every test (and the reliability suite) gives it.

The credentials and region are the local runtime's (ops/local/runtime.py), so a test and
`ingestctl local up` point boto3 the same way; nothing reaches AWS.
"""

from __future__ import annotations

from ops.local.resources import DEFAULT_REGION, Clients, Deployment, create_resources
from ops.local.runtime import LOCAL_CREDENTIALS

AWS_ENV = {"AWS_DEFAULT_REGION": DEFAULT_REGION, "AWS_REGION": DEFAULT_REGION, **LOCAL_CREDENTIALS}
# Set on a developer's machine, these would send moto's clients elsewhere.
AWS_UNSET = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")


def local_resources(bucket: str, tables: list[str]) -> tuple[Clients, Deployment]:
    """Inside `mock_aws`: the local runtime's resources for `tables`, with the s3:TestEvent
    messages the notification configuration sent dropped from every queue."""
    clients = Clients.create(region=DEFAULT_REGION)
    deployment = create_resources(clients, bucket=bucket, tables=tables)
    queues = [*deployment.consumers.values(), *(t.queue for t in deployment.tables.values())]
    for queue in queues:
        clients.sqs.purge_queue(QueueUrl=queue.url)
    return clients, deployment
