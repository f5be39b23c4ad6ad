"""Run the code blocks of one Markdown page, in order, in one namespace: `python tests/docs_blocks.py PAGE.md`.

What tests/test_docs.py runs once per page, in a subprocess (its own event loop, its own process-wide
uow state) whose working directory is a fresh temporary directory:

- a ```python block is executed; a block may `await` at top level (as in `python -m asyncio`), and all
  of a page's awaits run on one event loop, so an async engine's pool outlives a block;
- a block of any language with a title (```python title="myapp/db.py"```, ```toml title="pyproject.toml"```)
  is a file: it is written under that path, and a later block imports or runs it;
- any other block (```bash, ```text, ```toml) is shown, not run.

Tracebacks name the page and its line. The last line printed is a JSON count of what ran.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)(?P<attrs>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, its title (a file to write) if any, its code and first line."""

    lang: str
    title: str | None
    code: str
    line: int  # the page's line number of the block's first line of code

    @property
    def executed(self) -> bool:
        return self.lang == "python" and self.title is None


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order; an indented block (inside a list item) is dedented."""
    found = []
    for match in FENCE.finditer(text):
        title = TITLE.search(match["attrs"])
        line = text.count("\n", 0, match.start("body")) + 1
        body = textwrap.dedent(match["body"]) if match["indent"] else match["body"]
        found.append(Block(match["lang"], title["title"] if title else None, body, line))
    return found


def run(page: Path) -> dict[str, int]:
    # The page is a module of its own, registered as __main__, so that what looks a class's module up
    # (SQLAlchemy resolving `Mapped[int]`, pickle, typing.get_type_hints) finds the page's names.
    page_module = types.ModuleType("__main__")
    page_module.__file__ = str(page)
    sys.modules["__main__"] = page_module
    namespace = page_module.__dict__
    loop = asyncio.new_event_loop()
    counts = {"executed": 0, "files": 0}
    sys.path.insert(0, str(Path.cwd()))
    try:
        for block in blocks(page.read_text()):
            if block.title is not None:
                target = Path(block.title)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code)
                counts["files"] += 1
            elif block.executed:
                source = "\n" * (block.line - 1) + block.code  # line numbers in tracebacks are the page's
                code = compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                result = eval(code, namespace)  # noqa: S307 - the documentation's own code
                if inspect.iscoroutine(result):
                    loop.run_until_complete(result)
                counts["executed"] += 1
    finally:
        # Tasks a page left running (a session closed once its last statement is over) end first.
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=10))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return counts


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]).resolve())))
