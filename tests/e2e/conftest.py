"""Fixtures for the end-to-end tests: the real ``hfdav serve`` on a free port with a temporary
data directory, under cheroot by default or under both servers with ``@BOTH_SERVERS``.

Each server is stopped with SIGTERM at teardown; a server that does not exit within
``STOP_TIMEOUT_S`` fails the test. When a test fails, the log of every server it used is
attached to the failure report.
"""

from __future__ import annotations

import pytest

from tests.e2e.support import Server, ServerFactory, require_tool

#: Lines of a server log shown with a failing test.
LOG_TAIL_LINES = 300


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_tool(*names): skip, saying how to install it, when an external tool is missing"
    )


@pytest.fixture(autouse=True)
def _required_tools(request):
    """Checked before any server starts, so a missing tool costs nothing."""
    for marker in request.node.iter_markers("requires_tool"):
        for name in marker.args:
            require_tool(name)


@pytest.fixture
def server_factory(tmp_path):
    """Start servers with custom settings: ``server_factory.start(kind, env=..., password=...)``."""
    factory = ServerFactory(tmp_path / "servers")
    yield factory
    problems = factory.close()
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def server(request, server_factory) -> Server:
    """A fresh server with admin password set; cheroot unless parametrized (``BOTH_SERVERS``)."""
    return server_factory.start(getattr(request, "param", "cheroot"))


@pytest.fixture(scope="module")
def module_server(request, tmp_path_factory):
    """One server shared by the tests of a module (parametrize indirectly to choose the kind)."""
    kind = getattr(request, "param", "cheroot")
    factory = ServerFactory(tmp_path_factory.mktemp(f"servers-{kind}"))
    srv = factory.start(kind)
    yield srv
    problems = factory.close()
    if problems:
        pytest.fail("; ".join(problems))


def _servers_of(item) -> list[Server]:
    found: list[Server] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Server):
            found.append(value)
        elif isinstance(value, ServerFactory):
            found.extend(value.servers)
    unique = []
    for s in found:
        if all(s is not u for u in unique):
            unique.append(s)
    return unique


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for srv in _servers_of(item):
        lines = srv.log_text().splitlines()
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        report.sections.append((f"hfdav server log ({srv.kind}, {srv.log_path})", tail))
