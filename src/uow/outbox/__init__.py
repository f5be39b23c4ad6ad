"""The transactional outbox: jobs for SAQ, arq or Celery enqueued if and only if their unit committed.

```python
outbox = Outbox(db, runner=SaqRunner(queue))

@with_services(UserService)
async def register(users: UserService, email: str) -> None:
    user = await users.create(email)
    outbox.enqueue("send_welcome_mail", user_id=user.id)   # written in this unit's transaction
```
"""

from __future__ import annotations

from uow.outbox._outbox import (
    CapturedMessages,
    FailedMessage,
    Message,
    Outbox,
    PayloadError,
    Runner,
    capture_messages,
    outbox_table,
)
from uow.outbox._runners import ArqRunner, CeleryRunner, SaqRunner

__all__ = [
    "ArqRunner",
    "CapturedMessages",
    "CeleryRunner",
    "FailedMessage",
    "Message",
    "Outbox",
    "PayloadError",
    "Runner",
    "SaqRunner",
    "capture_messages",
    "outbox_table",
]
