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
from uow.integrations._require import requires

# run_async itself needs no typer; the import makes a missing typer a clear error here, not later.
with requires("typer", "typer", "typer"):
    import typer  # noqa: F401  # pyright: ignore[reportUnusedImport]

__all__ = ["run_async"]
