"""``connection=`` finds a request's unit with no framework integration imported (the lookup is core's)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = textwrap.dedent(
    """
    import sys

    from sqlalchemy import text

    import uow
    from uow._request_unit import SCOPE_KEY, RequestUnit

    db = uow.Database("sqlite://")
    scope = {"type": "http"}
    request = RequestUnit(db)
    scope[SCOPE_KEY] = request

    class Probe:
        def __init__(self, session):
            self.session = session

    @uow.with_services(Probe, database=db)
    def inside(probe: Probe) -> object:
        probe.session.execute(text("select 1"))
        return probe.session

    with uow.provide_services(Probe, connection=scope) as (probe,):
        provided = probe.session
    called = inside(connection=scope)
    assert called is provided is request.transaction.session, "both joined the request's unit"
    assert not request.finished, "a joined unit leaves the request's unit to its owner"
    request.finish_sync(None)
    print(sorted(name for name in sys.modules if name.startswith("uow.integrations")))
    """
)


def test_connection_finds_the_request_unit_without_an_integration_imported() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
