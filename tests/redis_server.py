"""The Redis server the job-runner tests use (UOW_TEST_REDIS_URL, default the one on 127.0.0.1).

When it cannot be reached its tests are skipped with the reason, unless UOW_REQUIRE_SERVERS=1:
then they fail. Each test works under a key prefix of its own and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from tests import servers

REDIS_URL = os.environ.get("UOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    """The server's URL; skips (or, under UOW_REQUIRE_SERVERS=1, fails) the test when it is unreachable."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        reason = f"Redis not reachable at {REDIS_URL} ({type(error).__name__}: {error})"
        if servers.REQUIRE_SERVERS:
            pytest.fail(f"{reason}; UOW_REQUIRE_SERVERS=1 requires it", pytrace=False)
        pytest.skip(f"{reason}; set UOW_TEST_REDIS_URL or start the server")
    finally:
        client.close()
    return REDIS_URL


def new_prefix() -> str:
    return f"uow-test-{uuid.uuid4().hex[:12]}"


def delete_keys(prefix: str) -> None:
    """Delete every key whose name contains `prefix`."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
