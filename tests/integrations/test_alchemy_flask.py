"""Flask with advanced-alchemy's AdvancedAlchemy extension linked to uow's: one session per request.

Configured as advanced-alchemy's docs show (``AdvancedAlchemy(SQLAlchemySyncConfig(...), app)``,
``alchemy.get_sync_session()`` in views, ``commit_mode`` ``"manual"`` or ``"autocommit"``), on the
test's engine so the fixtures count its connections and COMMITs.
"""

from __future__ import annotations

from typing import Any

import pytest
from advanced_alchemy.extensions.flask import AdvancedAlchemy, SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from flask import Flask, Response, abort, request
from sqlalchemy.orm import Session

import uow
from tests.integrations.web import NoteService, Web
from tests.models import Item, ItemService
from uow.errors import ConfigurationError
from uow.integrations.flask import UnitOfWork

pytest_plugins = ["tests.integrations.web"]

COMMIT_MODES = ["manual", "autocommit"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sync_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_sqlite" if request.param == "sqlite" else "web_postgres")
    return web


def config(web: Web, commit_mode: str = "manual") -> SQLAlchemySyncConfig:
    return SQLAlchemySyncConfig(engine_instance=web.db.engine, commit_mode=commit_mode)  # type: ignore[arg-type]


@uow.with_services(ItemService)
def add_then_fail(items: ItemService) -> None:
    items.add("doomed")
    raise RuntimeError("inner unit failed")


class Record:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.hooks: list[list[str]] = []
        self.starts: list[tuple[int, int]] = []

    def hook(self) -> None:
        self.hooks.append(self.web.names())


def linked_app(web: Web, commit_mode: str, record: Record) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer 500 as in production, instead of raising into the test

    @app.after_request
    def note_commits(response: Response) -> Response:
        # Registered first, so it runs last: after uow's commit, when the response is about to go out.
        record.starts.append((response.status_code, web.commits))
        return response

    alchemy = AdvancedAlchemy(config(web, commit_mode), app)
    UnitOfWork(app, web.db, alchemy=alchemy)

    @app.post("/shared")
    @uow.with_services(ItemService)
    def shared(items: ItemService, db_session: Session) -> Any:
        theirs = alchemy.get_sync_session()
        item = theirs.get(Item, items.add("shared").id)
        assert item is not None
        item.name = "renamed"
        with uow.provide_services(ItemService, connection=request) as (joined,):
            same = theirs is items.session is db_session is joined.session is uow.current_session()
        return {"same_session": same}, 201

    @app.post("/swallowed")
    def swallowed() -> Any:
        alchemy.get_sync_session().add(Item(name="outer"))
        uow.on_commit(record.hook)
        try:
            add_then_fail()
        except RuntimeError:
            pass
        return {"swallowed": "yes"}, 201

    @app.post("/hooked")
    @uow.with_services(ItemService)
    def hooked(items: ItemService) -> Any:
        items.add("hooked")
        uow.on_commit(record.hook)
        if request.args.get("fail"):
            abort(409)
        return {"ok": "yes"}, 201

    @app.post("/orphans")
    @uow.with_services(NoteService)
    def orphan(notes: NoteService) -> Any:
        notes.add_orphan("dangling")
        return {"saved": "yes"}, 201

    return app


@pytest.mark.parametrize("commit_mode", COMMIT_MODES)
def test_one_session_per_request(sync_web: Web, commit_mode: str) -> None:
    record = Record(sync_web)
    client = linked_app(sync_web, commit_mode, record).test_client()
    response = client.post("/shared")
    assert response.status_code == 201, response.text
    assert response.json == {"same_session": True}
    assert sync_web.names() == ["renamed"]
    assert sync_web.commits == 1
    assert record.starts == [(201, 1)]
    assert sync_web.checked_out == 0


@pytest.mark.parametrize("commit_mode", COMMIT_MODES)
def test_rollback_only_hooks_and_failed_commit(sync_web: Web, commit_mode: str) -> None:
    record = Record(sync_web)
    client = linked_app(sync_web, commit_mode, record).test_client()
    swallowed = client.post("/swallowed")
    assert swallowed.status_code == 500
    assert b"swallowed" not in swallowed.data
    assert client.post("/hooked", query_string={"fail": "1"}).status_code == 409
    assert record.hooks == []
    orphan = client.post("/orphans")
    assert orphan.status_code == 500
    assert b"saved" not in orphan.data
    assert client.post("/hooked").status_code == 201
    assert record.hooks == [["hooked"]]
    assert sync_web.names() == ["hooked"]
    assert sync_web.notes() == 0
    assert sync_web.commits == 2  # the orphan's COMMIT (refused by the database) and the last request's
    assert sync_web.checked_out == 0


UNLINKED = (
    "UnitOfWork is installed next to advanced-alchemy's AdvancedAlchemy extension without being linked to it: "
    "every request would get two sessions and two transactions (uow's and the extension's). Link them with "
    "UnitOfWork(app, db, alchemy=alchemy), passing the AdvancedAlchemy object of this app, so uow's request unit "
    "is the extension's request session; pass alchemy=False only if uow's Database is another database"
)


def test_unlinked_extensions_refuse_to_start(web_sqlite: Web) -> None:
    app = Flask(__name__)
    AdvancedAlchemy(config(web_sqlite), app)
    with pytest.raises(ConfigurationError) as info:
        UnitOfWork(app, web_sqlite.db)
    assert str(info.value) == UNLINKED


def test_advanced_alchemy_initialised_after_uow_refuses_the_first_request(web_sqlite: Web) -> None:
    app = Flask(__name__)
    app.testing = True  # let the error reach the test instead of Flask's 500 page
    UnitOfWork(app, web_sqlite.db)
    AdvancedAlchemy(config(web_sqlite), app)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    with pytest.raises(ConfigurationError) as info:
        app.test_client().get("/ping")
    assert str(info.value) == UNLINKED


def test_linked_extension_must_be_initialised_on_the_app_first(web_sqlite: Web) -> None:
    app = Flask(__name__)
    alchemy = AdvancedAlchemy(config(web_sqlite))
    with pytest.raises(ConfigurationError) as info:
        UnitOfWork(app, web_sqlite.db, alchemy=alchemy)
    assert str(info.value) == (
        "UnitOfWork(alchemy=...) was given an AdvancedAlchemy extension this app was not initialised with: "
        "initialise it first, AdvancedAlchemy(config, app), then UnitOfWork(app, db, alchemy=alchemy)"
    )


def test_an_async_config_cannot_be_the_request_unit(web_sqlite: Web) -> None:
    app = Flask(__name__)
    alchemy = AdvancedAlchemy(SQLAlchemyAsyncConfig(connection_string="sqlite+aiosqlite://"), app)
    try:
        with pytest.raises(ConfigurationError) as info:
            UnitOfWork(app, web_sqlite.db, alchemy=alchemy)
        assert str(info.value) == (
            "UnitOfWork cannot link advanced-alchemy's async config 'default': Flask runs each async view in an "
            "event loop of its own, so no async session can be the request's unit; link a SQLAlchemySyncConfig"
        )
    finally:
        alchemy.portal_provider.stop()
