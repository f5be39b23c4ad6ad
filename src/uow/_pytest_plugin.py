"""The pytest side of `uow.testing`: fixtures, the ``uow_commit`` marker and the ``uow_database`` ini option.

Nothing here runs unless a test asks for one of the ``uow_*`` fixtures, so projects that
install uow without using them see no change. `uow.testing` imports them (its ``__all__`` lists them).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from uow._database import Database, get_default_database
from uow._providers import apply_override, current_overrides, undo_overrides
from uow._stack import Frame, forget_frames_above, innermost_frame
from uow._testing import (
    CapturedHooks,
    UnitLeftOpenError,
    bound_to_transaction,
    capture_on_commit,
    frames_left_open,
    left_open_error,
)

COMMIT_MARKER = "uow_commit"
DATABASE_OPTION = "uow_database"

_NO_DATABASE = (
    "the uow fixtures have no database to bind. Do one of:\n"
    "  - define a fixture named 'uow_database' in conftest.py that returns your uow.Database;\n"
    '  - set uow_database = "myapp.db:database" under [tool.pytest.ini_options] (a Database, '
    "or a function returning one);\n"
    "  - call uow.configure(Database(...)) before the tests run (e.g. in conftest.py)"
)

_database_cache: pytest.StashKey[Database] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the `uow_database` ini option (`"module:attribute"` naming a Database or a function returning one)."""
    parser.addini(
        DATABASE_OPTION,
        "import path 'package.module:name' of the uow.Database (or a function returning one) "
        "that the uow_transaction fixtures bind",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the `uow_commit` marker (a test whose units commit for real)."""
    config.addinivalue_line(
        "markers",
        f"{COMMIT_MARKER}: run without uow's rollback-per-test transaction; units commit for real "
        "(the test cleans up after itself)",
    )


# -- the database -----------------------------------------------------------------------------


@pytest.fixture
def uow_database(pytestconfig: pytest.Config) -> Database:
    """The Database the uow fixtures bind: the ``uow_database`` ini option, else the one passed to ``uow.configure()``.

    Override this fixture in conftest.py to choose it yourself.
    """
    cached = pytestconfig.stash.get(_database_cache, None)
    if cached is not None:
        return cached
    path = str(pytestconfig.getini(DATABASE_OPTION) or "").strip()
    if path:
        database = _import_database(path)
        pytestconfig.stash[_database_cache] = database
        return database
    configured = get_default_database()
    if configured is None:
        pytest.fail(_NO_DATABASE, pytrace=False)
    return configured


def _import_database(path: str) -> Database:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        pytest.fail(f"uow_database = {path!r}: write it as 'package.module:name'", pytrace=False)
    try:
        target: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"uow_database = {path!r} cannot be imported: {error}", pytrace=False)
    if callable(target) and not isinstance(target, Database):
        target = target()
    if not isinstance(target, Database):
        pytest.fail(f"uow_database = {path!r} is a {type(target).__name__}, not a uow.Database", pytrace=False)
    return target


def _commits_for_real(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker(COMMIT_MARKER) is not None


# -- rollback per test ------------------------------------------------------------------------


@pytest.fixture
def uow_transaction(request: pytest.FixtureRequest, uow_database: Database) -> Iterator[Database]:
    """Runs the test inside an outer transaction on `uow_database` (sync) that is rolled back afterwards.

    Every unit the test triggers commits into a savepoint; yields the Database. Tests marked
    ``@pytest.mark.uow_commit`` run unbound and commit for real. Fails the test at teardown if
    it left a unit open, naming the function that opened it.
    """
    if uow_database.is_async:
        pytest.fail(f"uow_transaction: {uow_database!r} is async: use the uow_async_transaction fixture", pytrace=False)
    if _commits_for_real(request):
        entered_with = innermost_frame()
        yield uow_database
        _fail_if_frames_left(uow_database, entered_with)
        return
    try:
        with bound_to_transaction(uow_database):
            yield uow_database
    except UnitLeftOpenError as error:
        pytest.fail(str(error), pytrace=False)


def _fail_if_frames_left(database: Database, entered_with: Frame | None) -> None:
    names = frames_left_open(database, entered_with)
    if names:
        forget_frames_above(entered_with)
        pytest.fail(str(left_open_error(names, database)), pytrace=False)


async def _async_transaction(request: pytest.FixtureRequest, uow_database: Database) -> AsyncIterator[Database]:
    """Runs the test inside an outer transaction on `uow_database` (async) that is rolled back afterwards.

    The async twin of ``uow_transaction`` (needs pytest-asyncio).
    """
    if not uow_database.is_async:
        pytest.fail(f"uow_async_transaction: {uow_database!r} is sync: use the uow_transaction fixture", pytrace=False)
    if _commits_for_real(request):
        yield uow_database
        return
    try:
        async with bound_to_transaction(uow_database):
            yield uow_database
    except UnitLeftOpenError as error:
        pytest.fail(str(error), pytrace=False)


def _missing_pytest_asyncio() -> None:
    pytest.fail("uow_async_transaction needs pytest-asyncio: pip install pytest-asyncio", pytrace=False)


def _async_transaction_fixture() -> Any:
    try:
        import pytest_asyncio
    except ModuleNotFoundError:
        return pytest.fixture(name="uow_async_transaction")(_missing_pytest_asyncio)
    return pytest_asyncio.fixture(name="uow_async_transaction")(_async_transaction)


uow_async_transaction = _async_transaction_fixture()


# -- overrides and hooks ----------------------------------------------------------------------


@pytest.fixture
def uow_override() -> Iterator[Callable[[Any, Any], None]]:
    """``uow_override(UserService, FakeUserService)``: units build the replacement (class or instance) for this test.

    Held in a context variable: undone after the test, and invisible to other tests running
    concurrently in other tasks.
    """
    before = current_overrides()

    def apply(service: Any, replacement: Any) -> None:
        apply_override(service, replacement)

    yield apply
    undo_overrides(before)


@pytest.fixture
def uow_captured_hooks() -> Iterator[CapturedHooks]:
    """The ``on_commit`` hooks of units committed during the test, captured instead of run.

    Assert on the list, or run them with ``.run()`` / ``await .run_async()``; ``.rollback`` and
    ``.completion`` hold the ``on_rollback`` and ``on_completion`` hooks the same way.
    """
    with capture_on_commit() as hooks:
        yield hooks


@pytest.fixture
def uow_outbox_messages() -> Iterator[Any]:
    """The `uow.outbox` messages of units committed during the test, captured instead of delivered.

    Assert on the list of `Message`, or hand them to a runner with ``.deliver(runner)`` /
    ``await .deliver_async(runner)``.
    """
    from uow.outbox import capture_messages

    with capture_messages() as messages:
        yield messages
