"""advanced-alchemy's repository services and `create_service_provider` providers as `with_services` arguments."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from advanced_alchemy.base import BigIntBase
from advanced_alchemy.config import SQLAlchemyAsyncConfig
from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository, SQLAlchemySyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, SQLAlchemySyncRepositoryService
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Engine, String
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

import uow
from tests.conftest import Backend, _assert_clean

NOW = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.timezone.utc)
EXPIRED = NOW - datetime.timedelta(days=1)
VALID = NOW + datetime.timedelta(days=1)


class TokenColumns:
    email: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))


class EmailVerificationToken(TokenColumns, BigIntBase):
    __tablename__ = "uow_aa_email_verification_token"


class PasswordResetToken(TokenColumns, BigIntBase):
    __tablename__ = "uow_aa_password_reset_token"


class RefreshToken(TokenColumns, BigIntBase):
    __tablename__ = "uow_aa_refresh_token"


TABLES = [m.__table__ for m in (EmailVerificationToken, PasswordResetToken, RefreshToken)]


class EmailVerificationService(SQLAlchemyAsyncRepositoryService[EmailVerificationToken]):
    class Repository(SQLAlchemyAsyncRepository[EmailVerificationToken]):
        model_type = EmailVerificationToken

    repository_type = Repository


class PasswordResetService(SQLAlchemyAsyncRepositoryService[PasswordResetToken]):
    class Repository(SQLAlchemyAsyncRepository[PasswordResetToken]):
        model_type = PasswordResetToken

    repository_type = Repository


class RefreshTokenService(SQLAlchemyAsyncRepositoryService[RefreshToken]):
    class Repository(SQLAlchemyAsyncRepository[RefreshToken]):
        model_type = RefreshToken

    repository_type = Repository


class RefreshTokenSyncService(SQLAlchemySyncRepositoryService[RefreshToken]):
    class Repository(SQLAlchemySyncRepository[RefreshToken]):
        model_type = RefreshToken

    repository_type = Repository


provide_email_verification_service = create_service_provider(EmailVerificationService)
provide_password_reset_service = create_service_provider(PasswordResetService)
provide_refresh_token_service = create_service_provider(RefreshTokenService)
provide_refresh_token_sync_service = create_service_provider(RefreshTokenSyncService)


# The users' job, as they write it today:
#
#     async def cleanup_auth_tokens(_: Context) -> dict[str, int]:
#         async with alchemy.get_session() as db_session:
#             verification_service = await anext(provide_email_verification_service(db_session))
#             reset_service = await anext(provide_password_reset_service(db_session))
#             refresh_service = await anext(provide_refresh_token_service(db_session))
#             ...                                   # and nobody commits
#
# and with uow:
@uow.with_services(provide_email_verification_service, provide_password_reset_service, provide_refresh_token_service)
async def cleanup_auth_tokens(
    _: dict[str, Any],
    *,
    verification_service: EmailVerificationService,
    reset_service: PasswordResetService,
    refresh_service: RefreshTokenService,
) -> dict[str, int]:
    verification = await verification_service.delete_where(EmailVerificationToken.expires_at < NOW)
    reset = await reset_service.delete_where(PasswordResetToken.expires_at < NOW)
    refresh = await refresh_service.delete_where(RefreshToken.expires_at < NOW)
    return {"verification": len(verification), "reset": len(reset), "refresh": len(refresh)}


@pytest.fixture
async def aa_async_db(backend: Backend) -> AsyncIterator[uow.Database]:
    database = uow.Database(backend.async_url)
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.begin() as connection:
        await connection.run_sync(BigIntBase.metadata.drop_all, tables=TABLES)
        await connection.run_sync(BigIntBase.metadata.create_all, tables=TABLES)
    uow.configure(database)
    yield database
    try:
        _assert_clean(database, backend)
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(BigIntBase.metadata.drop_all, tables=TABLES)
        await database.dispose_async()


@pytest.fixture
def aa_sync_db(backend: Backend) -> Iterator[uow.Database]:
    database = uow.Database(backend.sync_url)
    engine = database.engine
    assert isinstance(engine, Engine)
    BigIntBase.metadata.drop_all(engine, tables=TABLES)
    BigIntBase.metadata.create_all(engine, tables=TABLES)
    uow.configure(database)
    yield database
    try:
        _assert_clean(database, backend)
    finally:
        BigIntBase.metadata.drop_all(engine, tables=TABLES)
        database.dispose()


@uow.with_services(EmailVerificationService, PasswordResetService, RefreshTokenService)
async def seed(
    verification: EmailVerificationService, reset: PasswordResetService, refresh: RefreshTokenService
) -> None:
    for service, model in ((verification, EmailVerificationToken), (reset, PasswordResetToken)):
        await service.create_many([model(email="old@x", expires_at=EXPIRED), model(email="new@x", expires_at=VALID)])
    await refresh.create_many([RefreshToken(email=f"{i}@x", expires_at=EXPIRED) for i in range(3)])


@uow.with_services(EmailVerificationService, PasswordResetService, RefreshTokenService, read_only=True)
async def remaining(
    verification: EmailVerificationService, reset: PasswordResetService, refresh: RefreshTokenService
) -> tuple[int, int, int]:
    return await verification.count(), await reset.count(), await refresh.count()


async def test_the_users_cleanup_job_is_one_decorator_and_commits(aa_async_db: uow.Database) -> None:
    await seed()
    assert await remaining() == (2, 2, 3)
    assert await cleanup_auth_tokens({}) == {"verification": 1, "reset": 1, "refresh": 3}
    assert await remaining() == (1, 1, 0)


async def test_a_failure_rolls_back_every_service(aa_async_db: uow.Database) -> None:
    await seed()

    @uow.with_services(provide_email_verification_service, provide_refresh_token_service)
    async def cleanup_then_fail(
        verification_service: EmailVerificationService, refresh_service: RefreshTokenService
    ) -> None:
        await verification_service.delete_where(EmailVerificationToken.expires_at < NOW)
        await refresh_service.delete_where(RefreshToken.expires_at < NOW)
        raise RuntimeError("after deleting")

    with pytest.raises(RuntimeError):
        await cleanup_then_fail()
    assert await remaining() == (2, 2, 3)


async def test_services_flush_and_the_unit_commits(aa_async_db: uow.Database) -> None:
    # advanced-alchemy's services default to auto_commit=False: they flush, so the rows are in
    # the unit's transaction (ids assigned) and the unit decides whether they are kept.
    @uow.with_services(RefreshTokenService)
    async def create(service: RefreshTokenService, fail: bool) -> int:
        token = await service.create(RefreshToken(email="a@x", expires_at=VALID))
        assert token.id is not None
        assert uow.current_session().in_transaction()
        if fail:
            raise RuntimeError("after create")
        return token.id

    with pytest.raises(RuntimeError):
        await create(fail=True)
    assert await remaining() == (0, 0, 0)
    token_id = await create(fail=False)
    async with uow.provide_services(RefreshTokenService) as (service,):
        assert (await service.get(token_id)).email == "a@x"


async def test_auto_commit_true_inside_a_unit_is_refused(aa_async_db: uow.Database) -> None:
    # A service made with auto_commit=True commits the unit's session itself, which would put its
    # work beyond the unit's rollback: uow refuses the commit, naming auto_commit, and nothing is kept.
    @uow.with_services(RefreshTokenService, PasswordResetService)
    async def create_with_auto_commit(refresh: RefreshTokenService, reset: PasswordResetService) -> None:
        await reset.create(PasswordResetToken(email="first@x", expires_at=VALID))
        await refresh.create(RefreshToken(email="a@x", expires_at=VALID), auto_commit=True)

    with pytest.raises(uow.OwnershipError, match="auto_commit=True") as refused:
        await create_with_auto_commit()
    assert "create_with_auto_commit" in str(refused.value)
    assert "session.flush()" in str(refused.value)
    assert await remaining() == (0, 0, 0)


async def test_a_service_made_with_auto_commit_is_refused_too(aa_async_db: uow.Database) -> None:
    @uow.with_services(RefreshTokenService)
    async def create(service: RefreshTokenService) -> None:
        auto = RefreshTokenService(session=service.repository.session, auto_commit=True)
        await auto.create_many([RefreshToken(email=f"{i}@x", expires_at=VALID) for i in range(2)])

    with pytest.raises(uow.OwnershipError, match="auto_commit=True"):
        await create()
    assert await remaining() == (0, 0, 0)


def test_a_sync_service_with_auto_commit_is_refused(aa_sync_db: uow.Database) -> None:
    @uow.with_services(RefreshTokenSyncService)
    def create(service: RefreshTokenSyncService) -> None:
        service.create(RefreshToken(email="a@x", expires_at=VALID), auto_commit=True)

    with pytest.raises(uow.OwnershipError, match="auto_commit=True"):
        create()
    with uow.provide_services(RefreshTokenSyncService) as (service,):
        assert service.count() == 0


async def test_auto_commit_on_a_session_the_caller_passed_commits(aa_async_db: uow.Database) -> None:
    # session= stays the caller's: uow does not guard it, so auto_commit commits as the caller asked.
    @uow.with_services(RefreshTokenService)
    async def create(service: RefreshTokenService) -> None:
        await service.create(RefreshToken(email="a@x", expires_at=VALID), auto_commit=True)

    factory = aa_async_db.session_factory
    async with factory() as session:
        await create(session=session)  # type: ignore[call-arg]
    assert await remaining() == (0, 0, 1)


async def test_service_classes_and_providers_in_one_unit_share_its_session(aa_async_db: uow.Database) -> None:
    @uow.with_services(RefreshTokenService, provide_email_verification_service)
    async def both(refresh: RefreshTokenService, verification_service: EmailVerificationService) -> bool:
        return refresh.repository.session is verification_service.repository.session is uow.current_session()

    assert await both()


async def test_a_database_built_on_advanced_alchemys_config(backend: Backend, aa_async_db: uow.Database) -> None:
    # An app that already has a SQLAlchemyAsyncConfig hands its session maker to uow.
    config = SQLAlchemyAsyncConfig(connection_string=backend.async_url.render_as_string(hide_password=False))
    database = uow.Database(session_factory=config.create_session_maker())  # type: ignore[arg-type]
    try:
        async with uow.provide_services(provide_refresh_token_service, database=database) as (service,):
            await service.create(RefreshToken(email="via-config@x", expires_at=EXPIRED))
        assert await remaining() == (0, 0, 1)
    finally:
        await config.get_engine().dispose()


def test_sync_service_class_and_provider(aa_sync_db: uow.Database) -> None:
    @uow.with_services(RefreshTokenSyncService)
    def create(service: RefreshTokenSyncService, emails: list[str], fail: bool = False) -> None:
        service.create_many([RefreshToken(email=e, expires_at=EXPIRED) for e in emails])
        if fail:
            raise RuntimeError("after create")

    @uow.with_services(provide_refresh_token_sync_service)
    def cleanup(refresh_token_sync_service: RefreshTokenSyncService) -> int:
        return len(refresh_token_sync_service.delete_where(RefreshToken.expires_at < NOW))

    create(["a@x", "b@x"])
    with pytest.raises(RuntimeError):
        create(["c@x"], fail=True)
    assert cleanup() == 2
    with uow.provide_services(RefreshTokenSyncService) as (service,):
        assert service.count() == 0
