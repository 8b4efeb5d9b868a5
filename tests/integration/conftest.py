import pytest
from moto import mock_aws

from ops.local.moto_edge import aws_like_moto
from services.merge import handler as merge_handler
from tests.integration.merge_pipeline import LAYOUTS, REGION, Pipeline, table_partitions

AWS_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@pytest.fixture
def aws_env(monkeypatch):
    """Credentials and region for moto; each test enters `mock_aws` itself."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    yield
    merge_handler.use_service(None)


@pytest.fixture
def aws(aws_env):
    """moto, with S3 notifications and conditional writes as AWS's (ops/local/moto_edge.py)."""
    with mock_aws(), aws_like_moto():
        yield


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request):
    """Each merge test runs with latest as one file and as narrow partitions."""
    with table_partitions("staff", LAYOUTS[request.param]):
        yield request.param


@pytest.fixture
def pipeline(aws, layout):
    return Pipeline("staff")
