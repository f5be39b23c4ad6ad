"""``python -m uow.outbox``: the relay as a process of its own, and the failed messages by hand.

    python -m uow.outbox relay --database URL --runner myapp.jobs:runner [--interval 1] [--once]
    python -m uow.outbox failed --database URL
    python -m uow.outbox requeue --database URL [ID ...]

``--runner`` names a runner object, or a function (plain or ``async``) returning one, as
``package.module:name``; ``--table`` likewise names the outbox `Table` when it is not the default.
The relay stops on SIGTERM or Ctrl-C; rows it had claimed wait for their lease.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import inspect
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table

from uow import ConfigurationError, Database
from uow.outbox._outbox import Message, Outbox


class _NoDelivery:
    """The runner of the commands that only read or repair the table."""

    def deliver(self, message: Message, /) -> None:
        raise ConfigurationError("this command does not deliver messages")


def _resolve(spec: str, label: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{label} {spec!r}: write it as 'package.module:name'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"{label} {spec!r}: cannot import {module_name!r} ({error})") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{label} {spec!r}: {module_name!r} has no {attribute!r}") from None
    return target


async def _runner(spec: str) -> Any:
    runner = _resolve(spec, "--runner")
    if not callable(getattr(runner, "deliver", None)) and callable(runner):
        runner = runner()
        if inspect.isawaitable(runner):
            runner = await runner
    return runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uow.outbox", description="The uow transactional outbox.")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="deliver what the committing processes did not")
    failed = commands.add_parser("failed", help="list the messages parked as failed (JSON lines)")
    requeue = commands.add_parser("requeue", help="put failed messages (these ids, else all) back in the queue")
    for command in (relay, failed, requeue):
        command.add_argument("--database", required=True, help="SQLAlchemy URL of the database holding the outbox")
        command.add_argument("--table", help="package.module:name of the outbox Table (default: uow_outbox)")
        command.add_argument("--name", default="default", help="the outbox's name (Outbox(name=...))")
    relay.add_argument("--runner", required=True, help="package.module:name of a runner or a function making one")
    relay.add_argument("--interval", type=float, default=1.0, help="seconds between passes when idle")
    relay.add_argument("--lease", type=float, default=60.0, help="seconds a claimed row is left to this relay")
    relay.add_argument("--max-attempts", type=int, default=10, help="deliveries tried before a row is parked")
    relay.add_argument("--once", action="store_true", help="one pass, then exit")
    requeue.add_argument("ids", nargs="*", help="message ids (default: every failed message)")
    return parser


async def _main(args: argparse.Namespace) -> int:
    database = Database(args.database)
    try:
        table: Table | None = _resolve(args.table, "--table") if args.table else None
        if args.command == "relay":
            outbox = Outbox(
                database,
                await _runner(args.runner),
                table=table,
                name=args.name,
                lease=args.lease,
                max_attempts=args.max_attempts,
            )
            if args.once:
                print(f"delivered {await outbox.relay_once()}", flush=True)
                return 0
            await _relay_until_stopped(outbox, args.interval)
            return 0
        outbox = Outbox(database, _NoDelivery(), table=table, name=args.name)
        if args.command == "failed":
            for message in await outbox.failed(limit=10_000):
                print(
                    json.dumps({**dataclasses.asdict(message), "created_at": message.created_at.isoformat()}),
                    flush=True,
                )
            return 0
        print(f"requeued {await outbox.requeue(args.ids or None)}", flush=True)
        return 0
    finally:
        await database.dispose_async()


async def _relay_until_stopped(outbox: Outbox, interval: float) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    print(f"relaying {outbox!r}", flush=True)
    try:
        await outbox.run(interval=interval)
    except asyncio.CancelledError:
        print("stopped", flush=True)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main(args))
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
