"""Fixtures of the S3 tests: a gateway served in-process (share at ``/``, S3 at ``/s3``), and
boto3 clients for a read-write and a read-only user."""

from __future__ import annotations

import pytest

from tests.inprocess import served_gateway

WRITER = ("alice", "alice-secret-0123")
READER = ("bob", "bob-secret-01234")


def gateway_env(tmp_path, **extra) -> dict[str, str]:
    return {
        "HFDAV_DATA_DIR": str(tmp_path / "data"),
        "SYS_TOKEN": "admin-password-0123",
        "HFDAV_USERS": f"{WRITER[0]}:{WRITER[1]}:rw,{READER[0]}:{READER[1]}:ro",
        "HFDAV_CHUNK_SIZE": "1MiB",
        **extra,
    }


@pytest.fixture
def served(tmp_path):
    """(base URL, gateway)."""
    with served_gateway(gateway_env(tmp_path), threads=8) as pair:
        yield pair


def client(endpoint: str, user=WRITER, **config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=user[0],
        aws_secret_access_key=user[1],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


@pytest.fixture
def s3(served):
    return client(served[0] + "/s3")


@pytest.fixture
def s3_ro(served):
    return client(served[0] + "/s3", READER)
