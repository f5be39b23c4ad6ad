"""typer: `@with_services` works on commands as it is; `run_async` lets a command be `async def`.

```python
@app.command()
@run_async
@with_services(UserService)
async def add_user(name: str, users: UserService) -> None: ...
```

typer reads the command's parameters from `inspect.signature`, which shows the command
without its injected services, so `--help` and the parsing never mention them. An
exception from the command rolls its unit back and typer exits non-zero; so does
`typer.Exit`, even with code 0: return from the command to commit.
"""

from __future__ import annotations

from uow.integrations._cli import run_async
from uow.integrations._require import installed

# run_async needs nothing of typer, so typer is not imported here; a missing typer is still a clear error.
installed("typer", "typer", "typer")

__all__ = ["run_async"]
