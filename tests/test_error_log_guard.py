"""The suite's guard against ERROR log records nobody expected (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


def test_an_unexpected_error_log_fails_the_test_and_the_marker_allows_it(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    allow_error_log: provokes errors\n")
    pytester.makepyfile(
        """
        import logging

        import pytest

        def test_logs_an_error():
            logging.getLogger("gateway.files").error("boom %d", 7)

        @pytest.mark.allow_error_log
        def test_provokes_it_on_purpose():
            logging.getLogger("gateway.files").error("boom")

        def test_another_library_logs_an_error():
            logging.getLogger("wsgidav.request_server").error("not the gateway's")

        def test_a_warning_is_not_an_error():
            logging.getLogger("gateway.files").warning("fine")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_logs_an_error*", "*unexpected ERROR log records*", "*gateway.files: ERROR: boom 7*"]
    )
