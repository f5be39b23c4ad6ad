"""Units in a child process after ``os.fork()``, the way Celery's prefork pool runs tasks, on PostgreSQL.

A pooled connection is a socket to one server backend; a child that used its parent's would
interleave the two processes' traffic on it. The child must get backends of its own, and the
parent's connection must still work once the child has finished (and dropped what it inherited).
"""

from __future__ import annotations

import gc
import json
import os
import traceback
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import uow
from tests.conftest import Backend, finish_sync_db, make_sync_db

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")


def in_child(work: Callable[[], object]) -> object:
    """Run `work` in a forked child; its JSON result, or the child's traceback as a test failure."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(read_end)
            result = work()
            # What the child inherited (the parent's pooled connections) is finalized here, in the child.
            gc.collect()
            payload = json.dumps({"result": result})
        except BaseException:
            payload = json.dumps({"error": traceback.format_exc()})
            code = 1
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(payload)
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read() or '{"error": "the child wrote nothing"}')
    _, status = os.waitpid(pid, 0)
    assert "error" not in report, f"the child failed:\n{report['error']}"
    assert os.waitstatus_to_exitcode(status) == 0
    return report["result"]


@pytest.fixture
def database(pg_backend: Backend) -> Iterator[uow.Database]:
    database = make_sync_db(pg_backend)
    yield database
    finish_sync_db(database, pg_backend)


def backend_pid_unit(database: uow.Database) -> Callable[[], int]:
    @uow.unit_of_work(database=database)
    def backend_pid(session: Session) -> int:
        return int(session.scalar(text("SELECT pg_backend_pid()")) or 0)

    return backend_pid


def test_a_child_never_reuses_a_pooled_connection_of_the_parent(database: uow.Database) -> None:
    backend_pid = backend_pid_unit(database)
    parent_backend = backend_pid()  # now pooled in the parent, checked in
    assert database.engine is not None
    assert database.engine.pool.checkedin() == 1  # type: ignore[attr-defined]

    child_backends = in_child(lambda: [backend_pid(), backend_pid()])

    assert isinstance(child_backends, list)
    assert parent_backend not in child_backends, "the child ran on the parent's pooled connection"
    # The parent's connection survived the child (which dropped its copy without closing it).
    assert backend_pid() == parent_backend


def test_a_child_forked_inside_a_unit_starts_without_it(database: uow.Database) -> None:
    backend_pid = backend_pid_unit(database)

    with uow.unit_of_work(database=database) as session:
        parent_backend = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)

        def child() -> list[int]:
            # A unit here must not join the parent's unit (its session holds the parent's socket).
            with pytest.raises(uow.NoActiveUnitOfWork):
                uow.current_session(database)
            return [backend_pid()]

        child_backends = in_child(child)
        assert isinstance(child_backends, list)
        assert parent_backend not in child_backends, "the child joined the parent's unit and its connection"
        # The parent's unit goes on, on its own connection.
        assert int(session.scalar(text("SELECT pg_backend_pid()")) or 0) == parent_backend
