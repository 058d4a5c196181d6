from tests.e2e.conftest import stack  # noqa: F401  (real processes, as in the e2e tests)
