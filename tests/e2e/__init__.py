"""End-to-end tests: the real ``hfdav serve`` (cheroot and gunicorn) driven by real clients."""
