import pytest

from services.merge import handler as merge_handler
from tests.integration.merge_pipeline import LAYOUTS, Pipeline, table_partitions


@pytest.fixture(autouse=True)
def fresh_merge_service():
    """A test that installs a merge service (merge_handler.use_service) leaves none behind."""
    yield
    merge_handler.use_service(None)


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request):
    """Each merge test runs with latest as one file and as narrow partitions."""
    with table_partitions("staff", LAYOUTS[request.param]):
        yield request.param


@pytest.fixture
def pipeline(aws, layout):
    return Pipeline("staff")
