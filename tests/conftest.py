"""Suite-wide fixtures.

- ``redis_server`` (session): one private ``redis-server`` on a free port, no persistence;
  has ``.host``, ``.port``, ``.url`` (``redis://127.0.0.1:<port>/0``), ``.url_for_db(n)``.
  Tests that use it are skipped (with the reason) when ``redis-server`` is not installed.
- ``redis_url`` (function): that server's URL, after a FLUSHALL, so every test starts empty.
- ``r`` (function): a ``decode_responses`` client on ``redis_url``, closed after the test.

Helpers for tests live in ``tests/support`` (``from support.redis_server import free_port``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

_TESTS_DIR = str(Path(__file__).resolve().parent)
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
# ``import support`` works whatever the import mode, and this checkout's code is imported even
# when the virtualenv's editable install points at another checkout.
for _path in (_REPO_ROOT, _TESTS_DIR):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

from support.redis_server import RedisServer, RedisServerUnavailable  # noqa: E402


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.is_running():
        pytest.fail(f"the test redis-server died; log tail:\n{redis_server.log_tail()}")
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def client(r: redis.Redis) -> redis.Redis:
    """``r`` under the name the matcher and settler tests use; the gateway's test modules
    define their own ``client`` (an HTTP test client), which takes precedence there."""
    return r
