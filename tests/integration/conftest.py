import pytest
from moto import mock_aws

from services.merge import handler as merge_handler
from tests.integration.merge_pipeline import REGION, Pipeline


@pytest.fixture
def aws(monkeypatch):
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield
    merge_handler.use_service(None)


@pytest.fixture
def pipeline(aws):
    return Pipeline("staff")
