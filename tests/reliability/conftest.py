"""Fixtures for the reliability suite: SQLite (file) and PostgreSQL, with leak checks.

``backend`` is narrowed to the two databases the issue asks about; the parent
conftest's ``sync_db`` / ``async_db`` fixtures pick this one up and still check,
after each test, that no connection is checked out and no server session sits
idle in a transaction.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import servers
from tests.conftest import Backend, _sqlite_backend


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test using it runs on an SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    server: servers.Server = request.getfixturevalue("postgres_server")
    request.applymarker(pytest.mark.postgres)
    return Backend("postgresql", server.sync_url, server.async_url, server)


@pytest.fixture
def pg_backend(postgres_server: servers.Server) -> Backend:
    """PostgreSQL only: for what SQLite cannot show (backend pids, killed connections)."""
    return Backend("postgresql", postgres_server.sync_url, postgres_server.async_url, postgres_server)
