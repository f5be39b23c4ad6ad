"""uow.testing: the pytest plugin, proven by running small suites with pytester, on SQLite and PostgreSQL.

The inner suites use the conftest.py blocks of docs/testing.md verbatim (with `myapp` renamed),
so the documentation a user copies is the code under test. Each inner suite runs in a
subprocess: its own event loop, its own process-wide uow state.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import uow
from tests import servers
from tests.models import AsyncItemService, Base, Item, ItemService
from uow._pytest_plugin import _missing_pytest_asyncio
from uow._stack import innermost_frame
from uow.errors import ConfigurationError
from uow.testing import CapturedHooks, UnitLeftOpenError, bound_to_transaction, capture_on_commit

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "testing.md"  # its two conftest.py blocks
SRC = ROOT / "src"


# Plugins the inner suites never use; loading them costs seconds per run.
UNUSED_PLUGINS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:anyio"]


def plugin_args() -> list[str]:
    """Name the plugin explicitly: harmless when the installed package registers it too (the entry point's name)."""
    return [*UNUSED_PLUGINS, "-p", "uow.testing"]


def docs_conftest(kind: str, package: str) -> str:
    """The `kind` ('sync' or 'async') conftest.py of docs/testing.md, importing from `package` instead of myapp."""
    blocks = re.findall(r'```python title="conftest\.py"\n(.*?)```', DOCS.read_text(), re.S)
    assert len(blocks) == 2, "docs/testing.md should hold a sync and an async conftest.py"
    return blocks[0 if kind == "sync" else 1].replace("myapp.", f"{package}.")


SYNC_APP = {
    "syncapp/__init__.py": "",
    "syncapp/db.py": """
        import os
        import uow

        database = uow.Database(os.environ["UOW_INNER_SYNC_URL"])
    """,
    "syncapp/models.py": """
        from sqlalchemy import String
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        class Base(DeclarativeBase):
            pass

        class Note(Base):
            __tablename__ = "uow_testing_sync_notes"
            id: Mapped[int] = mapped_column(primary_key=True)
            text: Mapped[str] = mapped_column(String(100))
    """,
    "syncapp/services.py": """
        from sqlalchemy import delete, select
        from sqlalchemy.orm import Session
        import uow
        from syncapp.db import database
        from syncapp.models import Note

        class NoteService:
            def __init__(self, session: Session) -> None:
                self.session = session

            def add(self, text: str) -> None:
                self.session.add(Note(text=text))
                self.session.flush()

            def texts(self) -> list[str]:
                return sorted(self.session.scalars(select(Note.text)))

        class FakeNoteService(NoteService):
            def texts(self) -> list[str]:
                return ["fake"]

        class Report:
            def __init__(self, notes: NoteService) -> None:
                self.notes = notes

            def summary(self) -> str:
                return ",".join(self.notes.texts())

        class StaticReport:
            def summary(self) -> str:
                return "static"

        @uow.with_services(NoteService, database=database)
        def add_note(notes: NoteService, text: str) -> None:
            notes.add(text)

        @uow.with_services(NoteService, database=database, propagation="requires_new")
        def add_note_in_new_unit(notes: NoteService, text: str) -> None:
            notes.add(text)

        @uow.with_services(NoteService, database=database)
        def add_with_inner_new_unit(notes: NoteService, outer: str, inner: str) -> None:
            notes.add(outer)
            add_note_in_new_unit(inner)

        @uow.with_services(NoteService, database=database, propagation="nested")
        def add_note_then_fail(notes: NoteService, text: str) -> None:
            notes.add(text)
            raise RuntimeError("fails")

        @uow.with_services(NoteService, database=database)
        def add_and_recover(notes: NoteService, kept: str, lost: str) -> None:
            notes.add(kept)
            try:
                add_note_then_fail(lost)
            except RuntimeError:
                pass

        @uow.with_services(NoteService, database=database, read_only=True)
        def note_texts(notes: NoteService) -> list[str]:
            return notes.texts()

        @uow.with_services(NoteService, database=database, read_only=True)
        def write_in_read_only_unit(notes: NoteService, text: str) -> None:
            notes.add(text)

        @uow.with_services(NoteService, database=database, isolation_level="SERIALIZABLE")
        def count_serializable(notes: NoteService) -> int:
            return len(notes.texts())

        @uow.with_services(Report, database=database)
        def summary(report: Report) -> str:
            return report.summary()

        @uow.with_services(NoteService, database=database)
        def add_note_then_notify(notes: NoteService, text: str, sent: list) -> None:
            notes.add(text)
            uow.on_commit(lambda: sent.append(text), database=database)

        @uow.with_services(NoteService, database=database)
        def add_note_notify_and_fail(notes: NoteService, text: str, sent: list) -> None:
            notes.add(text)
            uow.on_commit(lambda: sent.append(text), database=database)
            raise RuntimeError("fails")

        @uow.with_services(NoteService, database=database)
        def delete_all_notes(notes: NoteService) -> None:
            notes.session.execute(delete(Note))

        def committed_texts() -> list[str]:
            # A connection of its own sees only what was really committed.
            with database.engine.connect() as connection:
                return sorted(connection.exec_driver_sql("SELECT text FROM uow_testing_sync_notes").scalars())
    """,
}

SYNC_TESTS = """
    import pytest
    import uow
    from uow.testing import capture_on_commit
    from syncapp.db import database
    from syncapp.services import (
        FakeNoteService, NoteService, Report, StaticReport, add_and_recover, add_note, add_note_notify_and_fail,
        add_note_then_notify, add_with_inner_new_unit, committed_texts, count_serializable, delete_all_notes,
        note_texts, summary, write_in_read_only_unit,
    )

    def test_a_writes():
        add_note("a")
        assert note_texts() == ["a"]
        assert committed_texts() == []

    def test_b_does_not_see_what_a_wrote():
        assert note_texts() == []

    def test_requires_new_unit_is_rolled_back_with_the_test():
        add_with_inner_new_unit("outer", "inner")
        assert note_texts() == ["inner", "outer"]
        assert committed_texts() == []

    def test_after_requires_new_nothing_is_left():
        assert note_texts() == []

    def test_nested_unit_rolls_back_its_savepoint_only():
        add_and_recover("kept", "lost")
        assert note_texts() == ["kept"]

    def test_read_only_unit_refuses_writes_and_the_test_goes_on():
        with pytest.raises(Exception):
            write_in_read_only_unit("refused")
        add_note("written")
        assert note_texts() == ["written"]

    def test_isolation_level_unit_runs_inside_the_test_transaction():
        add_note("z")
        assert count_serializable() == 1

    def test_override_applies_to_dependencies_and_provide_services(uow_override):
        add_note("real")
        uow_override(NoteService, FakeNoteService)
        assert summary() == "fake"
        with uow.provide_services(NoteService, database=database) as (notes,):
            assert isinstance(notes, FakeNoteService)
        uow_override(Report, StaticReport())
        assert summary() == "static"

    def test_override_is_removed_after_the_test():
        add_note("real")
        assert summary() == "real"

    def test_hooks_run_when_the_unit_commits_into_its_savepoint():
        sent = []
        add_note_then_notify("h", sent)
        assert sent == ["h"]

    def test_captured_hooks_run_only_when_asked(uow_captured_hooks):
        sent = []
        add_note_then_notify("kept", sent)
        with pytest.raises(RuntimeError):
            add_note_notify_and_fail("dropped", sent)
        assert sent == []
        assert len(uow_captured_hooks) == 1
        uow_captured_hooks.run()
        assert sent == ["kept"]
        assert list(uow_captured_hooks) == []

    def test_capture_block_and_execute():
        sent = []
        with capture_on_commit() as hooks:
            add_note_then_notify("held", sent)
        assert sent == [] and len(hooks) == 1
        with capture_on_commit(execute=True):
            add_note_then_notify("run at the end", sent)
            assert sent == []
        assert sent == ["run at the end"]

    @pytest.mark.uow_commit
    def test_opt_out_commits_for_real():
        try:
            add_note("really committed")
            assert committed_texts() == ["really committed"]
        finally:
            delete_all_notes()

    def test_nothing_was_left_behind():
        assert committed_texts() == []
        assert uow._stack.innermost_frame() is None
"""
SYNC_TEST_COUNT = 14

ASYNC_APP = {
    "asyncapp/__init__.py": "",
    "asyncapp/db.py": """
        import os
        import uow

        database = uow.Database(os.environ["UOW_INNER_ASYNC_URL"])
    """,
    "asyncapp/models.py": """
        from sqlalchemy import String
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        class Base(DeclarativeBase):
            pass

        class Note(Base):
            __tablename__ = "uow_testing_async_notes"
            id: Mapped[int] = mapped_column(primary_key=True)
            text: Mapped[str] = mapped_column(String(100))
    """,
    "asyncapp/services.py": """
        import asyncio
        from sqlalchemy import delete, select
        from sqlalchemy.ext.asyncio import AsyncSession
        import uow
        from asyncapp.db import database
        from asyncapp.models import Note

        class NoteService:
            def __init__(self, session: AsyncSession) -> None:
                self.session = session

            async def add(self, text: str) -> None:
                self.session.add(Note(text=text))
                await self.session.flush()

            async def texts(self) -> list[str]:
                return sorted(await self.session.scalars(select(Note.text)))

        class FakeNoteService(NoteService):
            async def texts(self) -> list[str]:
                return ["fake"]

        class Report:
            def __init__(self, notes: NoteService) -> None:
                self.notes = notes

            async def summary(self) -> str:
                return ",".join(await self.notes.texts())

        class StaticReport:
            def __init__(self, text: str = "static") -> None:
                self.text = text

            async def summary(self) -> str:
                return self.text

        @uow.with_services(NoteService, database=database)
        async def add_note(notes: NoteService, text: str) -> None:
            await notes.add(text)

        @uow.with_services(NoteService, database=database, propagation="requires_new")
        async def add_note_in_new_unit(notes: NoteService, text: str) -> None:
            await notes.add(text)

        @uow.with_services(NoteService, database=database)
        async def add_with_inner_new_unit(notes: NoteService, outer: str, inner: str) -> None:
            await notes.add(outer)
            await add_note_in_new_unit(inner)

        @uow.with_services(NoteService, database=database, propagation="nested")
        async def add_note_then_fail(notes: NoteService, text: str) -> None:
            await notes.add(text)
            raise RuntimeError("fails")

        @uow.with_services(NoteService, database=database)
        async def add_and_recover(notes: NoteService, kept: str, lost: str) -> None:
            await notes.add(kept)
            try:
                await add_note_then_fail(lost)
            except RuntimeError:
                pass

        @uow.with_services(NoteService, database=database, read_only=True)
        async def note_texts(notes: NoteService) -> list[str]:
            return await notes.texts()

        @uow.with_services(NoteService, database=database, read_only=True)
        async def write_in_read_only_unit(notes: NoteService, text: str) -> None:
            await notes.add(text)

        @uow.with_services(NoteService, database=database, isolation_level="SERIALIZABLE")
        async def count_serializable(notes: NoteService) -> int:
            return len(await notes.texts())

        @uow.with_services(Report, database=database)
        async def summary(report: Report) -> str:
            return await report.summary()

        @uow.with_services(NoteService, database=database)
        async def add_note_then_notify(notes: NoteService, text: str, sent: list) -> None:
            await notes.add(text)

            async def notify() -> None:
                sent.append(text)

            uow.on_commit(notify, database=database)

        @uow.with_services(NoteService, database=database)
        async def add_note_notify_and_fail(notes: NoteService, text: str, sent: list) -> None:
            await notes.add(text)
            uow.on_commit(lambda: sent.append(text), database=database)
            raise RuntimeError("fails")

        @uow.with_services(NoteService, database=database)
        async def add_note_and_wait(notes: NoteService, text: str, started: asyncio.Event) -> None:
            await notes.add(text)
            started.set()
            await asyncio.Event().wait()

        @uow.with_services(NoteService, database=database)
        async def delete_all_notes(notes: NoteService) -> None:
            await notes.session.execute(delete(Note))

        async def committed_texts() -> list[str]:
            # A connection of its own sees only what was really committed.
            async with database.engine.connect() as connection:
                result = await connection.exec_driver_sql("SELECT text FROM uow_testing_async_notes")
                return sorted(result.scalars())
    """,
}

ASYNC_TESTS = """
    import asyncio
    import pytest
    import uow
    from uow.testing import capture_on_commit
    from asyncapp.db import database
    from asyncapp.services import (
        FakeNoteService, NoteService, Report, StaticReport, add_and_recover, add_note, add_note_notify_and_fail,
        add_note_then_notify, add_with_inner_new_unit, committed_texts, count_serializable, delete_all_notes,
        note_texts, summary, write_in_read_only_unit,
    )

    async def test_a_writes():
        await add_note("a")
        assert await note_texts() == ["a"]
        assert await committed_texts() == []

    async def test_b_does_not_see_what_a_wrote():
        assert await note_texts() == []

    async def test_requires_new_unit_is_rolled_back_with_the_test():
        await add_with_inner_new_unit("outer", "inner")
        assert await note_texts() == ["inner", "outer"]
        assert await committed_texts() == []

    async def test_after_requires_new_nothing_is_left():
        assert await note_texts() == []

    async def test_nested_unit_rolls_back_its_savepoint_only():
        await add_and_recover("kept", "lost")
        assert await note_texts() == ["kept"]

    async def test_read_only_unit_refuses_writes_and_the_test_goes_on():
        with pytest.raises(Exception):
            await write_in_read_only_unit("refused")
        await add_note("written")
        assert await note_texts() == ["written"]

    async def test_isolation_level_unit_runs_inside_the_test_transaction():
        await add_note("z")
        assert await count_serializable() == 1

    async def test_override_applies_to_dependencies_and_provide_services(uow_override):
        await add_note("real")
        uow_override(NoteService, FakeNoteService)
        assert await summary() == "fake"
        async with uow.provide_services(NoteService, database=database) as (notes,):
            assert isinstance(notes, FakeNoteService)
        uow_override(Report, StaticReport())
        assert await summary() == "static"

    async def test_override_is_removed_after_the_test():
        await add_note("real")
        assert await summary() == "real"

    async def test_overrides_of_concurrent_tasks_do_not_mix():
        async def summary_with(text):
            with uow.override(Report, StaticReport(text)):
                await asyncio.sleep(0)
                return await summary()

        assert await asyncio.gather(summary_with("one"), summary_with("two")) == ["one", "two"]

    async def test_hooks_run_when_the_unit_commits_into_its_savepoint():
        sent = []
        await add_note_then_notify("h", sent)
        assert sent == ["h"]

    async def test_captured_hooks_run_only_when_asked(uow_captured_hooks):
        sent = []
        await add_note_then_notify("kept", sent)
        with pytest.raises(RuntimeError):
            await add_note_notify_and_fail("dropped", sent)
        assert sent == []
        assert len(uow_captured_hooks) == 1
        await uow_captured_hooks.run_async()
        assert sent == ["kept"]

    async def test_capture_block_and_execute():
        sent = []
        async with capture_on_commit() as hooks:
            await add_note_then_notify("held", sent)
        assert sent == [] and len(hooks) == 1
        async with capture_on_commit(execute=True):
            await add_note_then_notify("run at the end", sent)
            assert sent == []
        assert sent == ["run at the end"]

    @pytest.mark.uow_commit
    async def test_opt_out_commits_for_real():
        try:
            await add_note("really committed")
            assert await committed_texts() == ["really committed"]
        finally:
            await delete_all_notes()

    async def test_nothing_was_left_behind():
        assert await committed_texts() == []
"""
ASYNC_TEST_COUNT = 15

INNER_INI = """
    [pytest]
    asyncio_mode = auto
    asyncio_default_fixture_loop_scope = session
    asyncio_default_test_loop_scope = session
"""


def write_tree(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())


def prepare(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, sync_url: str, async_url: str) -> None:
    """The inner project: both apps, the docs' conftests, and an environment pointing at the databases."""
    write_tree(pytester, {**SYNC_APP, **ASYNC_APP})
    write_tree(pytester, {"sync_tests/conftest.py": docs_conftest("sync", "syncapp")})
    write_tree(pytester, {"async_tests/conftest.py": docs_conftest("async", "asyncapp")})
    pytester.makeini(textwrap.dedent(INNER_INI))
    path = os.pathsep.join([str(SRC), str(pytester.path), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("UOW_INNER_SYNC_URL", sync_url)
    monkeypatch.setenv("UOW_INNER_ASYNC_URL", async_url)


def run_inner(pytester: pytest.Pytester, *paths: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*plugin_args(), "-v", *paths, timeout=300)


def count_items(database: uow.Database) -> int:
    with uow.provide_services(ItemService, database=database) as (items,):
        return items.count()


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


# -- tests that must fail, clearly: no database, a unit left open, the wrong fixture ------------

SYNC_LEAKS = """
    import pytest
    import uow
    from syncapp.db import database
    from syncapp.services import NoteService, note_texts

    def test_leaves_a_unit_open():
        context = uow.provide_services(NoteService, database=database)
        (notes,) = context.__enter__()
        notes.add("left open")

    def test_next_test_starts_clean():
        assert uow._stack.innermost_frame() is None
        assert note_texts() == []

    @pytest.mark.uow_commit
    def test_leaves_a_unit_open_while_committing_for_real():
        uow.unit_of_work(database=database).__enter__()

    def test_next_test_starts_clean_too():
        assert uow._stack.innermost_frame() is None

    def test_async_fixture_on_a_sync_database(uow_async_transaction):
        pass
"""

ASYNC_LEAKS = """
    import asyncio
    from asyncapp.services import add_note_and_wait, note_texts

    LEFT_RUNNING = []

    async def test_leaves_a_task_inside_a_unit():
        started = asyncio.Event()
        LEFT_RUNNING.append(asyncio.create_task(add_note_and_wait("left open", started)))
        await started.wait()

    async def test_next_test_starts_clean():
        LEFT_RUNNING[0].cancel()
        assert await note_texts() == []
"""

BARE = """
    def test_needs_a_database(uow_transaction):
        pass
"""


FAILING_TESTS = {
    "sync_tests/test_sync_leaks.py": SYNC_LEAKS,
    "async_tests/test_async_leaks.py": ASYNC_LEAKS,
    "bare_tests/test_bare.py": BARE,
}

FAILURE_MESSAGES = [
    "*ERROR at teardown of test_leaves_a_unit_open*",
    "*left 1 unit(s) of work open*opened by: provide_services(syncapp.services.NoteService)*",
    "*ERROR at teardown of test_leaves_a_unit_open_while_committing_for_real*",
    "*left 1 unit(s) of work open*opened by: unit_of_work()*",
    "*ERROR at setup of test_async_fixture_on_a_sync_database*",
    "*uow_async_transaction: <Database sqlite:///*(sync)> is sync: use the uow_transaction fixture*",
    "*ERROR at teardown of test_leaves_a_task_inside_a_unit*",
    "*left 1 unit(s) of work open*opened by: asyncapp.services.add_note_and_wait()*",
    "*ERROR at setup of test_needs_a_database*",
    "*the uow fixtures have no database to bind*",
    "*define a fixture named 'uow_database' in conftest.py*",
]


# -- rollback per test, overrides, hooks, opt-out: the same suites on each database --------------


def test_plugin_on_sqlite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prepare(
        pytester,
        monkeypatch,
        sync_url=f"sqlite:///{tmp_path / 'sync.sqlite3'}",
        async_url=f"sqlite+aiosqlite:///{tmp_path / 'async.sqlite3'}",
    )
    write_tree(pytester, {"sync_tests/test_sync_notes.py": SYNC_TESTS, "async_tests/test_async_notes.py": ASYNC_TESTS})
    write_tree(pytester, FAILING_TESTS)
    result = run_inner(pytester, "sync_tests", "async_tests", "bare_tests")
    # The failing tests run first (file order), so the suites after them also prove the next test starts clean.
    result.assert_outcomes(passed=SYNC_TEST_COUNT + ASYNC_TEST_COUNT + 6, errors=5)
    result.stdout.fnmatch_lines_random(FAILURE_MESSAGES)


@pytest.mark.postgres
def test_plugin_on_postgresql(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, postgres_server: servers.Server
) -> None:
    prepare(
        pytester,
        monkeypatch,
        sync_url=url_text(postgres_server.sync_url),
        async_url=url_text(postgres_server.async_url),
    )
    write_tree(pytester, {"sync_tests/test_sync_notes.py": SYNC_TESTS, "async_tests/test_async_notes.py": ASYNC_TESTS})
    result = run_inner(pytester, "sync_tests", "async_tests")
    result.assert_outcomes(passed=SYNC_TEST_COUNT + ASYNC_TEST_COUNT)


# -- where the database comes from: ini option, uow.configure() ----------------------------------

CONFIG_APP = """
    import os
    from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
    import uow

    metadata = MetaData()
    notes = Table("uow_testing_cfg_notes", metadata, Column("id", Integer, primary_key=True), Column("text", String(50)))
    database = uow.Database(os.environ["UOW_INNER_SYNC_URL"])
    metadata.create_all(database.engine)
    made = []

    def make_database():
        made.append(database)
        return database

    def add_note(text):
        with uow.unit_of_work(database=uow._database.get_default_database() or database) as session:
            session.execute(notes.insert().values(text=text))

    def count_notes():
        with uow.unit_of_work(database=uow._database.get_default_database() or database) as session:
            return session.scalar(select(func.count()).select_from(notes))
"""

CONFIG_TESTS = """
    import {app} as app

    def test_writes(uow_transaction):
        assert uow_transaction is app.database
        app.add_note("a")
        assert app.count_notes() == 1

    def test_sees_nothing_of_the_previous_test(uow_transaction, uow_database):
        assert uow_database is app.database
        assert app.count_notes() == 0
"""


DISPOSE_AT_THE_END = """

def pytest_unconfigure(config):
    import {app}

    {app}.database.dispose()
"""

INPROCESS_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def test_database_from_the_ini_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UOW_INNER_SYNC_URL", f"sqlite:///{tmp_path / 'ini.sqlite3'}")
    pytester.syspathinsert()
    write_tree(
        pytester,
        {
            "cfg_ini_app.py": CONFIG_APP,
            "conftest.py": DISPOSE_AT_THE_END.format(app="cfg_ini_app"),
            "test_ini.py": CONFIG_TESTS.format(app="cfg_ini_app"),
        },
    )
    once = "import cfg_ini_app\n\ndef test_the_factory_ran_once():\n    assert len(cfg_ini_app.made) == 1\n"
    write_tree(pytester, {"test_ini_zz.py": once})
    pytester.makeini(f"{INPROCESS_INI}uow_database = cfg_ini_app:make_database\n")
    result = pytester.runpytest_inprocess(*plugin_args())
    result.assert_outcomes(passed=3)


def test_database_from_uow_configure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UOW_INNER_SYNC_URL", f"sqlite:///{tmp_path / 'configured.sqlite3'}")
    pytester.syspathinsert()
    write_tree(
        pytester,
        {
            "cfg_configured_app.py": CONFIG_APP,
            "conftest.py": "import uow\nimport cfg_configured_app\n\nuow.configure(cfg_configured_app.database)\n"
            + DISPOSE_AT_THE_END.format(app="cfg_configured_app"),
            "test_configured.py": CONFIG_TESTS.format(app="cfg_configured_app"),
        },
    )
    pytester.makeini(INPROCESS_INI)
    result = pytester.runpytest_inprocess(*plugin_args())
    result.assert_outcomes(passed=2)


def test_bad_ini_option_says_how_to_write_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(f"{INPROCESS_INI}uow_database = not_a_path\n")
    write_tree(pytester, {"test_bad.py": BARE})
    result = pytester.runpytest_inprocess(*plugin_args())
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*uow_database = 'not_a_path': write it as 'package.module:name'*"])


def test_plugin_is_registered_through_the_pytest11_entry_point() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'\[project\.entry-points\.pytest11\]\s*\n"uow\.testing" = "uow\.testing"', pyproject)
    installed = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value == "uow.testing"]
    for entry_point in installed:  # present once the package is installed from this tree (CI)
        assert entry_point.name == "uow.testing"
        assert entry_point.load() is importlib.import_module("uow.testing")


def test_plugin_named_twice_is_loaded_once(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed entry point plus "-p uow.testing" plus pytest_plugins must not register it twice.
    dist_info = pytester.path / "uow_entry_point-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: uow-entry-point\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text("[pytest11]\nuow.testing = uow.testing\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(pytester.path)]))
    write_tree(
        pytester,
        {
            "conftest.py": 'pytest_plugins = ["uow.testing"]\n',
            "test_once.py": "def test_fixture_is_there(uow_override):\n    pass\n",
        },
    )
    result = pytester.runpytest_subprocess(*plugin_args())
    result.assert_outcomes(passed=1)


IMPORT_WITHOUT = """
import sys

sys.modules[{hidden!r}] = None  # as if it were not installed: importing it raises ModuleNotFoundError
import uow.testing

print(" ".join(sorted(name for name in uow.testing.__all__ if name.startswith(("uow_", "bound", "capture")))))
"""


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        ("pytest", "bound_to_transaction capture_on_commit"),
        (
            "pytest_asyncio",
            "bound_to_transaction capture_on_commit uow_async_transaction uow_captured_hooks uow_database "
            "uow_outbox_messages uow_override uow_transaction",
        ),
    ],
)
def test_imports_cleanly_without(hidden: str, expected: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    code = IMPORT_WITHOUT.format(hidden=hidden)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()


def test_async_fixture_without_pytest_asyncio_says_what_to_install() -> None:
    with pytest.raises(pytest.fail.Exception, match="needs pytest-asyncio: pip install pytest-asyncio"):
        _missing_pytest_asyncio()


# -- the context managers, without pytester -------------------------------------------------------


def test_bound_to_transaction_rolls_back_every_kind_of_unit(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db, propagation="requires_new")
    def add_in_new_unit(items: ItemService, name: str) -> None:
        items.add(name)

    with bound_to_transaction(sqlite_db) as connection:
        assert isinstance(connection, Connection)
        with uow.provide_services(ItemService, database=sqlite_db) as (items,):
            items.add("outer")
            add_in_new_unit("inner")
        with uow.unit_of_work(database=sqlite_db, propagation="nested") as session:
            session.add(Item(name="nested"))
        assert count_items(sqlite_db) == 3
    assert count_items(sqlite_db) == 0


async def test_bound_to_transaction_async(async_sqlite_db: uow.Database) -> None:
    async with bound_to_transaction(async_sqlite_db) as connection:
        assert isinstance(connection, AsyncConnection)
        async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
            await items.add("a")
        async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
            assert await items.count() == 1
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        assert await items.count() == 0


def test_user_engine_without_the_sqlite_recipe_still_rolls_back(tmp_path: Path) -> None:
    # A plain pysqlite engine lets the sqlite3 module manage transactions: without the binding's own
    # BEGIN, the first RELEASE SAVEPOINT would commit the test's rows for real.
    engine = create_engine(f"sqlite:///{tmp_path / 'own.sqlite3'}")
    Base.metadata.create_all(engine)
    database = uow.Database(engine=engine)
    try:
        with bound_to_transaction(database):
            with uow.provide_services(ItemService, database=database) as (items,):
                items.add("a")
            with uow.provide_services(ItemService, database=database) as (items,):
                assert items.count() == 1
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(Item)) == 0
            # The Database applied the recipe to the user's engine, as it would outside tests.
            assert connection.connection.dbapi_connection.isolation_level is None  # type: ignore[union-attr]
    finally:
        engine.dispose()


async def test_user_async_engine_without_the_sqlite_recipe_still_rolls_back(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'own.sqlite3'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    database = uow.Database(engine=engine)
    try:
        async with bound_to_transaction(database):
            async with uow.provide_services(AsyncItemService, database=database) as (items,):
                await items.add("a")
        async with engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(Item)) == 0
    finally:
        await engine.dispose()


def test_read_only_units_stay_on_the_test_connection_instead_of_a_replica(tmp_path: Path) -> None:
    database = uow.Database(
        f"sqlite:///{tmp_path / 'primary.sqlite3'}", replicas=[f"sqlite:///{tmp_path / 'replica.sqlite3'}"]
    )
    replica_factory = database.replica_factories[0]
    for engine in (database.engine, replica_factory.kw["bind"]):
        Base.metadata.create_all(engine)

    @uow.with_services(ItemService, database=database, read_only=True)
    def count(items: ItemService) -> int:
        return items.count()

    try:
        with bound_to_transaction(database):
            with uow.provide_services(ItemService, database=database) as (items,):
                items.add("a")
            assert count() == 1, "a replica cannot see the test's rows"
        assert database.replica_factories == [replica_factory]
        with uow.provide_services(ItemService, database=database) as (items,):
            items.add("on the primary only")
        assert count() == 0, "after the binding, read-only units go to the replica again"
    finally:
        database.dispose()


def test_a_unit_left_open_is_named_and_cleaned_up(sqlite_db: uow.Database) -> None:
    with pytest.raises(UnitLeftOpenError, match=r"opened by: provide_services\(tests\.models\.ItemService\)"):
        with bound_to_transaction(sqlite_db):
            (items,) = uow.provide_services(ItemService, database=sqlite_db).__enter__()
            items.add("left open")
    assert innermost_frame() is None
    assert count_items(sqlite_db) == 0


async def test_a_task_left_inside_a_unit_is_named(async_sqlite_db: uow.Database) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def add_and_wait(items: AsyncItemService) -> None:
        await items.add("left open")
        started.set()
        await release.wait()

    with pytest.raises(UnitLeftOpenError, match=r"add_and_wait\(\)"):
        async with bound_to_transaction(async_sqlite_db):
            task = asyncio.create_task(add_and_wait())
            await started.wait()
    release.set()
    await task  # its session was closed for it; finishing it must not fail either


def test_binding_refuses_what_it_cannot_do(sqlite_db: uow.Database, tmp_path: Path) -> None:
    with bound_to_transaction(sqlite_db), pytest.raises(ConfigurationError, match="already bound"):
        bound_to_transaction(sqlite_db).__enter__()
    factory_only = uow.Database(session_factory=sessionmaker())
    with pytest.raises(ConfigurationError, match="without an Engine bind"), bound_to_transaction(factory_only):
        pass
    with pytest.raises(ConfigurationError, match="no database"), bound_to_transaction():
        pass


async def test_async_database_needs_async_with(async_sqlite_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError, match="use 'async with"), bound_to_transaction(async_sqlite_db):
        pass


def test_capture_on_commit_outside_any_binding(sqlite_db: uow.Database) -> None:
    sent: list[str] = []
    with capture_on_commit() as hooks:
        with uow.unit_of_work(database=sqlite_db):
            uow.on_commit(lambda: sent.append("unit"), database=sqlite_db)
        with Session(sqlite_db.engine) as session, uow.provide_services(ItemService, session=session):
            uow.on_commit(lambda: sent.append("caller's session"))
            session.commit()
    assert sent == []
    hooks.run()
    assert sent == ["unit", "caller's session"]


async def test_captured_async_hooks_need_run_async(async_sqlite_db: uow.Database) -> None:
    sent: list[str] = []

    async def notify() -> None:
        sent.append("async")

    async with capture_on_commit() as hooks:
        async with uow.unit_of_work(database=async_sqlite_db):
            uow.on_commit(notify, database=async_sqlite_db)
    with pytest.raises(ConfigurationError, match="run_async"):
        CapturedHooks([notify]).run()
    await hooks.run_async()
    assert sent == ["async"]


def test_refused_write_in_read_only_sqlite_unit_keeps_the_test_connection(sqlite_db: uow.Database) -> None:
    # Switching query_only off used to go through the failed session and invalidate the shared connection.
    @uow.with_services(ItemService, database=sqlite_db, read_only=True)
    def write(items: ItemService) -> None:
        items.add("refused")

    with bound_to_transaction(sqlite_db) as connection:
        with pytest.raises(OperationalError, match="readonly"):
            write()
        assert not connection.invalidated
        with uow.provide_services(ItemService, database=sqlite_db) as (items,):
            items.add("written")


async def test_refused_write_in_read_only_aiosqlite_unit_keeps_the_test_connection(
    async_sqlite_db: uow.Database,
) -> None:
    @uow.with_services(AsyncItemService, database=async_sqlite_db, read_only=True)
    async def write(items: AsyncItemService) -> None:
        await items.add("refused")

    async with bound_to_transaction(async_sqlite_db) as connection:
        with pytest.raises(OperationalError, match="readonly"):
            await write()
        assert not connection.invalidated
        async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
            await items.add("written")


# -- code run by a framework's test client ---------------------------------------------------------


class CountingItemService(ItemService):
    def count(self) -> int:
        return -1


def test_starlette_test_client_requests_run_inside_the_binding(sqlite_db: uow.Database) -> None:
    pytest.importorskip("starlette", reason="the integrations extra is not installed")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    @uow.with_services(ItemService, database=sqlite_db)
    def create(items: ItemService, request: Request) -> JSONResponse:
        items.add(f"web-{items.count()}")
        uow.on_commit(lambda: None, database=sqlite_db)
        return JSONResponse({"count": items.count()})

    app = Starlette(routes=[Route("/", create, methods=["POST"])])
    with bound_to_transaction(sqlite_db), TestClient(app) as client:
        with capture_on_commit() as hooks:
            assert client.post("/").json() == {"count": 1}
        assert len(hooks) == 1, "the request's hook is captured although the app runs in another thread"
        with uow.override(ItemService, CountingItemService):
            assert client.post("/").json() == {"count": -1}
        assert count_items(sqlite_db) == 2
    assert count_items(sqlite_db) == 0


async def test_httpx_asgi_requests_run_inside_the_async_binding(async_sqlite_db: uow.Database) -> None:
    pytest.importorskip("starlette", reason="the integrations extra is not installed")
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def create(items: AsyncItemService, request: Request) -> JSONResponse:
        await items.add(f"web-{await items.count()}")
        return JSONResponse({"count": await items.count()})

    app = Starlette(routes=[Route("/", create, methods=["POST"])])
    async with bound_to_transaction(async_sqlite_db):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/")).json() == {"count": 1}
            assert (await client.post("/")).json() == {"count": 2}
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        assert await items.count() == 0
