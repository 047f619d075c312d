"""The hostile-client tests run the real servers with the end-to-end tests' fixtures
(``server_factory``, the server log attached to a failure)."""

from tests.e2e.conftest import _required_tools, pytest_runtest_makereport, server_factory  # noqa: F401
