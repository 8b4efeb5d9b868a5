import pytest

from services.transform import handler as transform_handler
from tests.integration.transform_pipeline import TransformChain


@pytest.fixture
def chain(aws):
    yield TransformChain()
    transform_handler.use_runtime(None)
