"""Run by tests/integrations/test_outbox_runners.py as a child process.

Commits a unit with one enqueued job; its runner announces the message and then hangs, so the
test kills the process with SIGKILL after COMMIT and before the job was handed to any broker.
Arguments: the database URL and the outbox lease in seconds.
"""

from __future__ import annotations

import asyncio
import sys

import uow
from uow.outbox import Message, Outbox


class HangsAfterCommit:
    async def deliver(self, message: Message, /) -> None:
        print(f"committed {message.id}", flush=True)
        await asyncio.sleep(120)


async def main(url: str, lease: float) -> None:
    database = uow.Database(url)
    outbox = Outbox(database, HangsAfterCommit(), lease=lease)
    async with uow.unit_of_work(database=database):
        outbox.enqueue("record", value="after a crash")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
