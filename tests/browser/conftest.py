import pytest

from tests.e2e.stack import Stack, ensure_services, stack_env


@pytest.fixture
def stack(transactional_db, tmp_path):
    ensure_services()
    processes = Stack(env=stack_env(), tmp=tmp_path)
    yield processes
    processes.stop()
