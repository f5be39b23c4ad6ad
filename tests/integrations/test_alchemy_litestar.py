"""Litestar with advanced-alchemy's SQLAlchemyPlugin linked to uow's plugin: one session per request.

The apps are configured the way advanced-alchemy's docs show (``SQLAlchemyPlugin(config=...)``,
``before_send_handler`` left at its default or set to ``"autocommit"``), on the test's engine
(``engine_instance=``) so the fixtures can count its connections and COMMITs. Every request
must see one session: the guard's, the dependency's, the handler's, ``current_session()``'s
and the ``db_session`` advanced-alchemy injects are the same object, and it is committed once.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from litestar import Litestar, Request, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.params import FromQuery
from litestar.security.jwt import JWTAuth, Token
from litestar.testing import TestClient
from litestar.types import Message, Scope
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.integrations.web import AsyncNoteService, NoteService, Web
from tests.models import AsyncItemService, AsyncTagService, Item, ItemService, Tag, TagService
from uow.errors import ConfigurationError
from uow.integrations.litestar import UnitOfWorkPlugin, provide_service

pytest_plugins = ["tests.integrations.web"]

BEFORE_SEND = ["default", "autocommit"]
SECRET = "uow-test-secret-" + "x" * 32


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def async_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_async_sqlite" if request.param == "sqlite" else "web_async_postgres")
    return web


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sync_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_sqlite" if request.param == "sqlite" else "web_postgres")
    return web


def async_config(web: Web, before_send: str = "default") -> SQLAlchemyAsyncConfig:
    engine = web.db.engine
    assert isinstance(engine, AsyncEngine)
    return SQLAlchemyAsyncConfig(
        engine_instance=engine, before_send_handler="autocommit" if before_send == "autocommit" else None
    )


def sync_config(web: Web, before_send: str = "default") -> SQLAlchemySyncConfig:
    return SQLAlchemySyncConfig(
        engine_instance=web.db.engine,  # type: ignore[arg-type]
        before_send_handler="autocommit" if before_send == "autocommit" else None,
    )


class Record:
    """What the app saw: session ids per place, hooks that ran, the COMMIT count when each response started."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.sessions: dict[str, int] = {}
        self.hooks: list[list[str]] = []
        self.starts: list[tuple[int, int]] = []

    def at_response_start(self, message: Message, scope: Scope) -> None:
        # Passed to Litestar(before_send=...) first, so it runs before advanced-alchemy's own handler.
        if message["type"] == "http.response.start":
            self.starts.append((int(message["status"]), self.web.commits))

    def hook(self) -> None:
        self.hooks.append(self.web.names())


def seed_item(web: Web, name: str = "alice") -> int:
    with web.check.begin() as connection:
        return int(connection.execute(insert(Item).values(name=name).returning(Item.id)).scalar_one())


# -- async ------------------------------------------------------------------------------------


@uow.with_services(AsyncItemService)
async def add_then_fail(items: AsyncItemService) -> None:
    await items.add("doomed")
    raise RuntimeError("inner unit failed")


@uow.with_services(AsyncItemService)
async def session_seen_through(connection: Any, items: AsyncItemService) -> int:
    return id(items.session)


def async_app(web: Web, config: SQLAlchemyAsyncConfig, record: Record) -> Litestar:
    sessions = record.sessions

    async def guard_with_provide_services(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        async with uow.provide_services(AsyncItemService, connection=connection) as (items,):
            sessions["guard"] = id(items.session)
            connection.state.item = await items.add("from-guard")

    @uow.with_services(AsyncItemService)
    async def decorated_guard(
        connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler, items: AsyncItemService
    ) -> None:
        sessions["decorated_guard"] = id(items.session)

    async def advanced_alchemys_session(db_session: NamedDependency[AsyncSession]) -> int:
        return id(db_session)

    @post(
        "/shared",
        guards=[guard_with_provide_services, decorated_guard],
        dependencies={"tags": provide_service(AsyncTagService), "aa_session": Provide(advanced_alchemys_session)},
    )
    @uow.with_services(AsyncItemService)
    async def shared(
        items: AsyncItemService,
        tags: NamedDependency[AsyncTagService],
        db_session: NamedDependency[AsyncSession],
        aa_session: NamedDependency[int],
        request: Request[Any, Any, Any],
    ) -> dict[str, str]:
        item: Item = request.state.item
        item.name = "renamed-in-handler"
        db_session.add(item)  # the guard's object belongs to this very session
        await tags.tag(item, "t")
        sessions.update(
            handler=id(items.session),
            dependency=id(tags.session),
            db_session=id(db_session),
            advanced_alchemy=aa_session,
            current=id(uow.current_session()),
            # A task started in an empty context (create_task's context= is Python 3.11+).
            fresh_context=await contextvars.Context().run(asyncio.create_task, session_seen_through(request)),
        )
        return {"ok": "yes"}

    @post("/swallowed")
    async def swallowed(db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
        db_session.add(Item(name="outer"))
        uow.on_commit(record.hook)
        try:
            await add_then_fail()
        except RuntimeError:
            pass
        return {"swallowed": "yes"}

    @post("/hooked")
    @uow.with_services(AsyncItemService)
    async def hooked(items: AsyncItemService, fail: FromQuery[bool] = False) -> None:
        await items.add("hooked")
        uow.on_commit(record.hook)
        if fail:
            raise NotAuthorizedException("no")

    @post("/orphans")
    @uow.with_services(AsyncNoteService)
    async def orphan(notes: AsyncNoteService) -> dict[str, str]:
        await notes.add_orphan("dangling")
        return {"saved": "yes"}

    return Litestar(
        [shared, swallowed, hooked, orphan],
        before_send=[record.at_response_start],
        plugins=[SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(web.db, alchemy=config)],
    )


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_async_one_session_per_request(async_web: Web, before_send: str) -> None:
    record = Record(async_web)
    with TestClient(async_app(async_web, async_config(async_web, before_send), record)) as client:
        response = client.post("/shared")
    assert response.status_code == 201, response.text
    sessions = record.sessions
    assert set(sessions) == {
        "guard",
        "decorated_guard",
        "handler",
        "dependency",
        "db_session",
        "advanced_alchemy",
        "current",
        "fresh_context",
    }
    assert len(set(sessions.values())) == 1, sessions
    assert async_web.names() == ["renamed-in-handler"]
    assert async_web.commits == 1
    assert record.starts == [(201, 1)]  # committed before the response started, and never again
    assert async_web.checked_out == 0


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_async_swallowed_inner_failure_rolls_the_request_session_back(async_web: Web, before_send: str) -> None:
    record = Record(async_web)
    with TestClient(async_app(async_web, async_config(async_web, before_send), record)) as client:
        response = client.post("/swallowed")
    assert response.status_code == 500
    assert "swallowed" not in response.text
    assert async_web.names() == []
    assert async_web.commits == 0
    assert record.hooks == []
    assert async_web.checked_out == 0


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_async_hooks_run_after_the_commit_and_never_after_a_rollback(async_web: Web, before_send: str) -> None:
    record = Record(async_web)
    with TestClient(async_app(async_web, async_config(async_web, before_send), record)) as client:
        assert client.post("/hooked", params={"fail": "true"}).status_code == 401
        assert record.hooks == []
        assert client.post("/hooked").status_code == 201
    assert record.hooks == [["hooked"]]
    assert record.starts == [(401, 0), (201, 1)]
    assert async_web.commits == 1


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_async_failed_commit_is_a_500(async_web: Web, before_send: str) -> None:
    record = Record(async_web)
    with TestClient(async_app(async_web, async_config(async_web, before_send), record)) as client:
        response = client.post("/orphans")
        assert response.status_code == 500
        assert "saved" not in response.text
        assert client.post("/hooked").status_code == 201
    assert async_web.notes() == 0
    assert async_web.names() == ["hooked"]
    assert [status for status, _ in record.starts] == [500, 201]
    assert async_web.checked_out == 0


# -- sync -------------------------------------------------------------------------------------


@uow.with_services(ItemService)
def add_then_fail_sync(items: ItemService) -> None:
    items.add("doomed")
    raise RuntimeError("inner unit failed")


def sync_app(web: Web, config: SQLAlchemySyncConfig, record: Record) -> Litestar:
    sessions = record.sessions

    def guard_with_provide_services(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        with uow.provide_services(ItemService, connection=connection) as (items,):
            sessions["guard"] = id(items.session)
            connection.state.item = items.add("from-guard")

    @uow.with_services(ItemService)
    def decorated_guard(
        connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler, items: ItemService
    ) -> None:
        sessions["decorated_guard"] = id(items.session)

    def advanced_alchemys_session(db_session: NamedDependency[Session]) -> int:
        return id(db_session)

    @post(
        "/shared",
        guards=[guard_with_provide_services, decorated_guard],
        dependencies={
            "tags": provide_service(TagService),
            "aa_session": Provide(advanced_alchemys_session, sync_to_thread=False),
        },
        sync_to_thread=True,
    )
    @uow.with_services(ItemService)
    def shared(
        items: ItemService,
        tags: NamedDependency[TagService],
        db_session: NamedDependency[Session],
        aa_session: NamedDependency[int],
        request: Request[Any, Any, Any],
    ) -> dict[str, str]:
        item: Item = request.state.item
        item.name = "renamed-in-handler"
        db_session.add(item)
        tags.tag(item, "t")
        sessions.update(
            handler=id(items.session),
            dependency=id(tags.session),
            db_session=id(db_session),
            advanced_alchemy=aa_session,
            current=id(uow.current_session()),
        )
        return {"ok": "yes"}

    @post("/swallowed", sync_to_thread=True)
    def swallowed(db_session: NamedDependency[Session]) -> dict[str, str]:
        db_session.add(Item(name="outer"))
        uow.on_commit(record.hook)
        try:
            add_then_fail_sync()
        except RuntimeError:
            pass
        return {"swallowed": "yes"}

    @post("/orphans", sync_to_thread=True)
    @uow.with_services(NoteService)
    def orphan(notes: NoteService) -> dict[str, str]:
        notes.add_orphan("dangling")
        uow.on_commit(record.hook)
        return {"saved": "yes"}

    return Litestar(
        [shared, swallowed, orphan],
        before_send=[record.at_response_start],
        plugins=[SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(web.db, alchemy=config)],
    )


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_sync_one_session_per_request(sync_web: Web, before_send: str) -> None:
    record = Record(sync_web)
    with TestClient(sync_app(sync_web, sync_config(sync_web, before_send), record)) as client:
        response = client.post("/shared")
    assert response.status_code == 201, response.text
    sessions = record.sessions
    assert set(sessions) == {
        "guard",
        "decorated_guard",
        "handler",
        "dependency",
        "db_session",
        "advanced_alchemy",
        "current",
    }
    assert len(set(sessions.values())) == 1, sessions
    assert sync_web.names() == ["renamed-in-handler"]
    assert sync_web.commits == 1
    assert record.starts == [(201, 1)]
    assert sync_web.checked_out == 0


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_sync_rollback_only_and_failed_commit_are_500s(sync_web: Web, before_send: str) -> None:
    record = Record(sync_web)
    with TestClient(sync_app(sync_web, sync_config(sync_web, before_send), record)) as client:
        assert client.post("/swallowed").status_code == 500
        assert client.post("/orphans").status_code == 500
    assert sync_web.names() == []
    assert sync_web.notes() == 0
    assert sync_web.commits == 1  # the orphan's COMMIT, issued once and refused by the database
    assert record.hooks == []
    assert [status for status, _ in record.starts] == [500, 500]
    assert sync_web.checked_out == 0


# -- authentication: Litestar's JWTAuth calls retrieve_user_handler(token, connection) -----------


def jwt_app(web: Web, config: SQLAlchemyAsyncConfig) -> tuple[Litestar, JWTAuth[Item]]:
    @uow.with_services(AsyncItemService)
    async def retrieve_user_handler(
        token: Token, connection: ASGIConnection[Any, Any, Any, Any], items: AsyncItemService
    ) -> Item | None:
        connection.state.user_session = id(items.session)
        return await items.session.get(Item, int(token.sub))

    jwt_auth = JWTAuth[Item](retrieve_user_handler=retrieve_user_handler, token_secret=SECRET)

    @post("/me/rename")
    async def rename(
        request: Request[Item, Token, Any], db_session: NamedDependency[AsyncSession], name: FromQuery[str]
    ) -> dict[str, bool]:
        user = request.user
        user.name = name
        db_session.add(user)  # "already attached to session ..." if the user was loaded in a session of its own
        db_session.add(Tag(item_id=user.id, label="renamed"))
        return {"same_session": request.state.user_session == id(db_session)}

    app = Litestar(
        [rename],
        on_app_init=[jwt_auth.on_app_init],
        plugins=[SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(web.db, alchemy=config)],
    )
    return app, jwt_auth


@pytest.mark.parametrize("before_send", BEFORE_SEND)
def test_decorated_retrieve_user_handler_uses_the_request_session(async_web: Web, before_send: str) -> None:
    user_id = seed_item(async_web)
    app, jwt_auth = jwt_app(async_web, async_config(async_web, before_send))
    token = jwt_auth.create_token(identifier=str(user_id))
    with TestClient(app) as client:
        unauthenticated = client.post("/me/rename", params={"name": "bob"})
        assert unauthenticated.status_code == 401
        response = client.post("/me/rename", params={"name": "bob"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    assert response.json() == {"same_session": True}
    assert async_web.names() == ["bob"]
    with async_web.check.connect() as connection:
        assert list(connection.scalars(select(Tag.label))) == ["renamed"]
    assert async_web.commits == 1  # the app's engine committed once (the seed went through the check engine)
    assert async_web.checked_out == 0


# -- how the two plugins are put together --------------------------------------------------------


def test_unlinked_plugins_refuse_to_start(web_async_sqlite: Web) -> None:
    config = async_config(web_async_sqlite)
    expected = (
        "UnitOfWorkPlugin is installed next to advanced-alchemy's SQLAlchemyPlugin without being linked to it: "
        "every request would get two sessions and two transactions (uow's and the plugin's db_session). "
        "Link them with UnitOfWorkPlugin(db, alchemy=alchemy_config), passing the config you gave SQLAlchemyPlugin, "
        "so uow's request unit is the plugin's request session; pass alchemy=False only if uow's Database is "
        "another database"
    )
    for plugins in (
        [SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(web_async_sqlite.db)],
        [UnitOfWorkPlugin(web_async_sqlite.db), SQLAlchemyPlugin(config=config)],
    ):
        with pytest.raises(ConfigurationError) as info:
            Litestar([], plugins=plugins)
        assert str(info.value) == expected


def test_linked_config_must_be_the_plugins(web_async_sqlite: Web) -> None:
    installed, other = async_config(web_async_sqlite), async_config(web_async_sqlite)
    with pytest.raises(ConfigurationError) as info:
        Litestar([], plugins=[SQLAlchemyPlugin(config=installed), UnitOfWorkPlugin(web_async_sqlite.db, alchemy=other)])
    assert str(info.value) == (
        "UnitOfWorkPlugin(alchemy=...) was given an advanced-alchemy config that no SQLAlchemyPlugin of this app "
        "holds: install the plugin with that same config object, Litestar(plugins=[SQLAlchemyPlugin("
        "config=alchemy_config), UnitOfWorkPlugin(db, alchemy=alchemy_config)])"
    )


def test_linked_config_and_database_must_be_of_one_kind(web_sqlite: Web) -> None:
    config = SQLAlchemyAsyncConfig(connection_string="sqlite+aiosqlite://")
    with pytest.raises(ConfigurationError) as info:
        Litestar([], plugins=[SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(web_sqlite.db, alchemy=config)])
    assert str(info.value).startswith(
        "UnitOfWorkPlugin(alchemy=...) links an async advanced-alchemy config to the sync "
    )


def test_the_readme_setup_from_a_connection_string(web_async_sqlite: Web) -> None:
    # As docs/guides/litestar.md shows it: advanced-alchemy's config from a URL, uow's Database on its engine, set as the default.
    url = web_async_sqlite.db.engine.url.render_as_string(hide_password=False)  # type: ignore[union-attr]
    alchemy = SQLAlchemyAsyncConfig(connection_string=url, before_send_handler="autocommit")
    uow.configure(uow.Database(engine=alchemy.get_engine()))

    @post("/items")
    @uow.with_services(AsyncItemService)
    async def create(items: AsyncItemService, db_session: AsyncSession, name: FromQuery[str]) -> dict[str, bool]:
        await items.add(name)
        return {"same": items.session is db_session is uow.current_session()}

    app = Litestar([create], plugins=[SQLAlchemyPlugin(config=alchemy), UnitOfWorkPlugin(alchemy=alchemy)])
    with TestClient(app) as client:
        assert client.post("/items", params={"name": "from-readme"}).json() == {"same": True}
    assert web_async_sqlite.names() == ["from-readme"]


def test_alchemy_false_keeps_two_sessions(web_async_sqlite: Web) -> None:
    config = async_config(web_async_sqlite, "autocommit")

    @post("/both")
    @uow.with_services(AsyncItemService)
    async def both(items: AsyncItemService, request: Request[Any, Any, Any]) -> dict[str, bool]:
        theirs = config.provide_session(request.app.state, request.scope)
        await items.add("ours")
        return {"same": theirs is items.session}

    app = Litestar(
        [both], plugins=[SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(web_async_sqlite.db, alchemy=False)]
    )
    with TestClient(app) as client:
        assert client.post("/both").json() == {"same": False}
    assert web_async_sqlite.names() == ["ours"]


def test_linked_without_any_uow_database(web_async_sqlite: Web) -> None:
    # No Database given or configured: inside a request every unit joins the plugin's session anyway.
    config = async_config(web_async_sqlite, "autocommit")

    @post("/items")
    @uow.with_services(AsyncItemService)
    async def create(items: AsyncItemService, db_session: AsyncSession) -> dict[str, bool]:
        await items.add("no-database")
        return {"same": items.session is db_session}

    app = Litestar([create], plugins=[SQLAlchemyPlugin(config=config), UnitOfWorkPlugin(alchemy=config)])
    with TestClient(app) as client:
        assert client.post("/items").json() == {"same": True}
    assert web_async_sqlite.names() == ["no-database"]
    assert web_async_sqlite.commits == 1
