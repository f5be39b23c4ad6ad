"""Runners for SAQ, arq and Celery: each hands an outbox message to its library, keyed by the message id.

None imports its library: each calls the queue, pool or app object it is given.
"""

from __future__ import annotations

from typing import Any

from uow.outbox._outbox import Message, PayloadError

__all__ = ["ArqRunner", "CeleryRunner", "SaqRunner"]


class SaqRunner:
    """Enqueue on a SAQ ``Queue`` with ``key=message.id``.

    SAQ refuses a second job with a key that is still queued or running, so a repeat
    delivered meanwhile is dropped; one delivered after the job finished runs again.
    `job_options` (``timeout``, ``retries``, ``ttl`` ...) go to every ``saq.Job``.
    """

    def __init__(self, queue: Any, **job_options: Any) -> None:
        from saq import Job

        self.queue = queue
        self.job_options = job_options
        self._job = Job

    async def deliver(self, message: Message, /) -> None:
        """Enqueue `message` as a SAQ job keyed by the message id (a repeat is dropped while the job is queued or running)."""
        # A Job, not keyword arguments: payload keys such as "timeout" stay the job's arguments.
        job = self._job(function=message.job, kwargs=dict(message.payload), key=message.id, **self.job_options)
        await self.queue.enqueue(job)  # None when a job with this key is queued or running already


class ArqRunner:
    """Enqueue on an ``ArqRedis`` pool with ``_job_id=message.id``.

    arq refuses a job id it still holds (queued, running, or its result kept for
    ``keep_result``, an hour by default), so a repeat within that time is dropped.
    """

    def __init__(self, redis: Any, *, queue_name: str | None = None) -> None:
        self.redis = redis
        self.queue_name = queue_name

    def check(self, job: str, payload: dict[str, Any]) -> None:
        """Refuse payload keys arq would take as its own options (``_job_id``, ``_defer_by`` ...)."""
        reserved = sorted(key for key in payload if key.startswith("_"))
        if reserved:
            raise PayloadError(
                f"outbox.enqueue({job!r}): arq reads keyword arguments starting with '_' as its own "
                f"options ({', '.join(reserved)}); rename them"
            )

    async def deliver(self, message: Message, /) -> None:
        """Enqueue `message` as an arq job with `_job_id` = the message id (a repeat is dropped while arq knows the id)."""
        await self.redis.enqueue_job(message.job, _job_id=message.id, _queue_name=self.queue_name, **message.payload)


class CeleryRunner:
    """Send the task by name through a Celery app with ``task_id=message.id``.

    Celery does not deduplicate: a repeat runs again, with the same ``self.request.id``,
    so a task that must run once can record the ids it has run. `options` go to ``send_task``.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        self.app = app
        self.options = options

    def deliver(self, message: Message, /) -> None:
        """Send `message` as a Celery task with `task_id` = the message id."""
        self.app.send_task(message.job, kwargs=dict(message.payload), task_id=message.id, **self.options)
