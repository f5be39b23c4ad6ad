"""Runners for tests/test_outbox_cli.py's `python -m uow.outbox relay --runner ...` (a user's own module).

Each delivered message's id and job go into the file named by UOW_OUTBOX_TEST_FILE, one per line.
"""

from __future__ import annotations

import os
from pathlib import Path

from uow.outbox import Message


class FileRunner:
    def deliver(self, message: Message, /) -> None:
        with Path(os.environ["UOW_OUTBOX_TEST_FILE"]).open("a") as file:
            file.write(f"{message.id} {message.job}\n")


runner = FileRunner()


async def make_runner() -> FileRunner:
    """A runner factory, as a SAQ or arq user writes one to connect inside the relay's event loop."""
    return FileRunner()
