"""`uow._failures.to_completion`: an async unit's ending runs to its end whatever cancels meanwhile.

Every owning async unit ends through it (`Transaction.finish_async`), so does applying a unit's
options and closing an abandoned session. The ending runs in a task that declines to be cancelled;
the task awaiting it gets its cancellation once the ending is done (see docs/design.md, "Nothing is
lost"). These tests cancel the awaiting task, the ending task itself and every task at once, and
check what the work did and what the caller sees.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from uow._failures import to_completion


class Boom(Exception):
    pass


async def _steps(done: list[str], *, steps: int = 3, fail: bool = False) -> str:
    """Work with `steps` suspensions, as a COMMIT and a close are: records each step it finished."""
    for n in range(steps):
        await asyncio.sleep(0)
        done.append(f"step {n}")
    if fail:
        raise Boom("the ending failed")
    return "ended"


async def test_without_a_cancellation_the_result_and_none() -> None:
    done: list[str] = []
    assert await to_completion(_steps(done)) == ("ended", None)
    assert done == ["step 0", "step 1", "step 2"]


async def test_a_failure_without_a_cancellation_propagates() -> None:
    with pytest.raises(Boom):
        await to_completion(_steps([], fail=True))


@pytest.mark.parametrize("times", [1, 3])
async def test_cancelling_the_caller_lets_the_work_finish_then_reaches_it(times: int) -> None:
    done: list[str] = []
    seen: list[object] = []

    async def caller() -> None:
        result, cancellation = await to_completion(_steps(done, steps=5))
        seen.append((result, type(cancellation)))
        assert cancellation is not None
        raise cancellation

    task = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0)  # the caller is waiting on the ending now
    for _ in range(times):
        assert task.cancel()  # the request is taken: it reaches the caller later
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [f"step {n}" for n in range(5)], "the ending was cut short"
    assert seen == [("ended", asyncio.CancelledError)]


async def test_a_failure_while_cancelled_raises_the_cancellation_with_the_failure_noted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def caller() -> None:
        await to_completion(_steps([], fail=True))

    task = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="uow"), pytest.raises(asyncio.CancelledError) as raised:
        await task
    # The failure is logged with its traceback, and noted on the cancellation where exceptions take notes
    # (Python 3.11+; on 3.10 asyncio has already given the cancellation a context of its own).
    assert any(r.exc_info is not None and isinstance(r.exc_info[1], Boom) for r in caplog.records), caplog.records
    if sys.version_info >= (3, 11):
        notes = getattr(raised.value, "__notes__", [])
        assert any("ending the unit also failed" in note for note in notes), notes


async def test_the_ending_task_itself_declines_to_be_cancelled() -> None:
    done: list[str] = []
    ending = asyncio.get_running_loop().create_task(to_completion(_steps(done, steps=4)))
    await asyncio.sleep(0)
    # What asyncio.run does at shutdown, and what a supervisor cancelling "every task" does.
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task() and task is not ending:
            assert not task.cancel(), task  # the ending task runs to its end
    assert await ending == ("ended", None)
    assert done == [f"step {n}" for n in range(4)]


async def test_work_that_raises_cancelled_itself_propagates_it() -> None:
    async def cancelled_inside() -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await to_completion(cancelled_inside())


async def test_a_timeout_around_the_ending_waits_for_it_and_times_out_after() -> None:
    done: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(0.05)
        done.append("ended")
        return "ended"

    async def caller() -> None:
        _, cancellation = await to_completion(slow())
        if cancellation is not None:
            raise cancellation

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(caller(), 0.01)
    assert done == ["ended"]
