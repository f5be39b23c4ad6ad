"""Celery tasks decorated with `@with_services`: a real worker on a real Redis broker, and eager mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker
from sqlalchemy import text

import uow
from tests import servers
from tests.conftest import Backend, finish_sync_db, make_sync_db
from tests.models import ItemService

pytestmark = pytest.mark.redis


def names_in(database: uow.Database) -> list[str]:
    with uow.provide_services(ItemService, database=database) as (items,):
        return items.names()


def make_app(redis_url: str, prefix: str, *, eager: bool = False) -> Celery:
    """A Celery app whose every Redis key (broker and results) starts with `prefix`."""
    app = Celery("uow_tests", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": f"{prefix}:"},
        result_backend_transport_options={"global_keyprefix": f"{prefix}:"},
        task_default_queue=f"{prefix}-queue",
        broker_connection_retry_on_startup=False,
        worker_hijack_root_logger=False,
        result_expires=300,
        task_always_eager=eager,
        task_eager_propagates=eager,
    )
    return app


class Tasks:
    """The tasks a user would write, registered on one app."""

    def __init__(self, app: Celery) -> None:
        @app.task
        @uow.with_services(ItemService)
        def add_items(items: ItemService, names: list[str], fail: bool = False) -> int:
            for name in names:
                items.add(name)
            if fail:
                raise RuntimeError("failed after adding")
            return items.count()

        @app.task(bind=True)
        @uow.with_services(ItemService)
        def add_own_id(self: Task, items: ItemService, prefix: str) -> str:
            name = f"{prefix}-{self.request.id}"
            items.add(name)
            return name

        self.add_items = add_items
        self.add_own_id = add_own_id


@pytest.fixture
def worker_app(redis_url: str, redis_prefix: str) -> Iterator[tuple[Celery, Tasks]]:
    app = make_app(redis_url, redis_prefix)
    tasks = Tasks(app)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=15):
        yield app, tasks
    app.close()


def test_task_names_are_the_users(redis_url: str, redis_prefix: str) -> None:
    tasks = Tasks(make_app(redis_url, redis_prefix))
    assert tasks.add_items.name == f"{__name__}.add_items"
    assert tasks.add_own_id.name == f"{__name__}.add_own_id"


def test_worker_runs_a_task_and_commits(worker_app: tuple[Celery, Tasks], sync_db: uow.Database) -> None:
    uow.configure(sync_db)
    _, tasks = worker_app
    assert tasks.add_items.delay(["a", "b"]).get(timeout=15) == 2
    assert names_in(sync_db) == ["a", "b"]


def test_worker_rolls_back_a_failing_task(worker_app: tuple[Celery, Tasks], sync_db: uow.Database) -> None:
    uow.configure(sync_db)
    _, tasks = worker_app
    result = tasks.add_items.delay(["a"], fail=True)
    with pytest.raises(RuntimeError, match="failed after adding"):
        result.get(timeout=15)
    assert names_in(sync_db) == []


def test_worker_runs_a_bound_task(worker_app: tuple[Celery, Tasks], sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    _, tasks = worker_app
    result = tasks.add_own_id.delay("job")
    assert result.get(timeout=15) == f"job-{result.id}"
    assert names_in(sqlite_db) == [f"job-{result.id}"]


def test_threads_pool_gives_each_task_its_own_unit(redis_url: str, redis_prefix: str, sync_db: uow.Database) -> None:
    uow.configure(sync_db)
    app = make_app(redis_url, redis_prefix)
    tasks = Tasks(app)
    with start_worker(app, pool="threads", concurrency=3, perform_ping_check=False, shutdown_timeout=15):
        results = [tasks.add_items.delay([f"n{i}"], fail=i == 2) for i in range(5)]
        outcomes = [r.get(timeout=15, propagate=False) for r in results]
    app.close()
    assert isinstance(outcomes[2], RuntimeError)
    assert names_in(sync_db) == ["n0", "n1", "n3", "n4"]


@pytest.fixture
def postgres_db(postgres_server: servers.Server) -> Iterator[uow.Database]:
    backend = Backend("postgresql", postgres_server.sync_url, postgres_server.async_url, postgres_server)
    database = make_sync_db(backend)
    yield database
    finish_sync_db(database, backend)


@pytest.mark.postgres
def test_prefork_children_open_their_own_connections(
    redis_url: str, redis_prefix: str, postgres_db: uow.Database
) -> None:
    # Database's at-fork handler drops the parent's pooled connections in each child (without
    # closing them under the parent), so no child talks on a socket the parent also uses.
    uow.configure(postgres_db)
    app = make_app(redis_url, redis_prefix)
    tasks = Tasks(app)

    @app.task
    @uow.with_services(ItemService)
    def server_pid(items: ItemService) -> int:
        return int(items.session.scalar(text("SELECT pg_backend_pid()")))

    with uow.provide_services(ItemService) as (items,):
        parent_pid = items.session.scalar(text("SELECT pg_backend_pid()"))
    with start_worker(app, pool="prefork", concurrency=2, perform_ping_check=False, shutdown_timeout=20):
        added = [tasks.add_items.delay([f"n{i}"]) for i in range(4)]
        child_pids = {server_pid.delay().get(timeout=20) for _ in range(4)}
        for result in added:
            result.get(timeout=20)
    app.close()
    assert parent_pid not in child_pids
    with uow.provide_services(ItemService) as (items,):
        assert items.session.scalar(text("SELECT pg_backend_pid()")) == parent_pid
        assert items.names() == ["n0", "n1", "n2", "n3"]


def test_delay_checks_the_visible_signature(redis_url: str, redis_prefix: str) -> None:
    # Checked in the caller before anything is sent: the injected service is not a task argument.
    tasks = Tasks(make_app(redis_url, redis_prefix))
    with pytest.raises(TypeError):
        tasks.add_items.delay()
    with pytest.raises(TypeError):
        tasks.add_items.delay(["a"], colour="red")
    with pytest.raises(TypeError):
        tasks.add_items.delay(["a"], items=None)
    with pytest.raises(TypeError):
        tasks.add_own_id.delay()
    with pytest.raises(TypeError):
        tasks.add_own_id.apply_async(args=("a", "b"))


def test_eager_mode_commits_and_rolls_back(redis_url: str, redis_prefix: str, sync_db: uow.Database) -> None:
    uow.configure(sync_db)
    tasks = Tasks(make_app(redis_url, redis_prefix, eager=True))
    assert tasks.add_items.delay(["a"]).get() == 1
    with pytest.raises(RuntimeError):
        tasks.add_items.delay(["b"], fail=True)
    bound = tasks.add_own_id.delay("eager")
    assert names_in(sync_db) == ["a", f"eager-{bound.id}"]


class NewItem(pydantic.BaseModel):
    name: str


class AddedItem(pydantic.BaseModel):
    name: str
    total: int


def test_pydantic_task_validates_its_own_arguments(redis_url: str, redis_prefix: str, sqlite_db: uow.Database) -> None:
    # Celery's pydantic=True reads the visible signature and type hints: it validates `item`, not `items`.
    uow.configure(sqlite_db)
    app = make_app(redis_url, redis_prefix, eager=True)

    @app.task(pydantic=True)
    @uow.with_services(ItemService)
    def add_item(items: ItemService, item: NewItem) -> AddedItem:
        items.add(item.name)
        return AddedItem(name=item.name, total=items.count())

    assert add_item.delay({"name": "a"}).get() == {"name": "a", "total": 1}
    with pytest.raises(pydantic.ValidationError):
        add_item.delay({"title": "b"})
    assert names_in(sqlite_db) == ["a"]


def test_eager_task_joins_the_callers_unit(redis_url: str, redis_prefix: str, sqlite_db: uow.Database) -> None:
    # Called inline inside a unit, the task joins it: the caller's failure takes the task's work with it.
    uow.configure(sqlite_db)
    tasks = Tasks(make_app(redis_url, redis_prefix, eager=True))

    @uow.with_services(ItemService)
    def outer(items: ItemService) -> Any:
        items.add("outer")
        tasks.add_items.delay(["inner"])
        raise RuntimeError("outer fails")

    with pytest.raises(RuntimeError, match="outer fails"):
        outer()
    assert names_in(sqlite_db) == []
