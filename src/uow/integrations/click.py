"""click: `@with_services` works on commands as it is; `run_async` lets a command be `async def`.

```python
@click.command()
@click.option("--name")
@run_async
@with_services(UserService)
async def add_user(name: str, users: UserService) -> None: ...
```

click builds options and arguments from its own decorators and calls the command with
keywords, so a decorated `def` command needs nothing more. An exception from the command
rolls its unit back and click exits non-zero; so does `click.exceptions.Exit`, even with
code 0: return from the command to commit.
"""

from __future__ import annotations

from uow.integrations._cli import run_async
from uow.integrations._require import installed

# run_async needs nothing of click, so click is not imported here; a missing click is still a clear error.
installed("click", "click", "click")

__all__ = ["run_async"]
