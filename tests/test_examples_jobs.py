"""examples/cli.py, examples/jobs.py and examples/outbox.py run as the programs they are, on SQLite files."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from celery.contrib.testing.worker import start_worker

from tests import redis_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    redis_server.require_redis()
    prefix = redis_server.new_prefix()
    yield prefix
    redis_server.delete_keys(prefix)


def test_cli_commits_each_command_and_rolls_back_a_failing_one(tmp_path: Path) -> None:
    db = str(tmp_path / "notes.sqlite3")
    added = run("cli.py", "--db", db, "add", "buy milk", "call mum")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "added #1: buy milk\nadded #2: call mum\n"
    failed = run("cli.py", "--db", db, "done", "2", "42")
    assert failed.returncode == 1
    assert "no note 42" in failed.stderr
    assert failed.stdout == "done #2: call mum\n"  # done, then rolled back with the failure
    listed = run("cli.py", "--db", db, "list")
    assert listed.stdout == "[ ] #1 buy milk\n[ ] #2 call mum\n"


@pytest.mark.redis
def test_jobs_tour_runs_the_celery_task_and_the_arq_worker(tmp_path: Path, redis_prefix: str) -> None:
    env = {
        "JOBS_DB": str(tmp_path / "jobs.sqlite3"),
        "JOBS_QUEUE": redis_prefix,
        "JOBS_REDIS_URL": redis_server.REDIS_URL,
    }
    tour = run("jobs.py", env=env)
    assert tour.returncode == 0, tour.stderr
    assert "celery: issued token #3 for cy@example.com" in tour.stdout
    assert "arq: cleanup_expired_tokens -> {'deleted': 2, 'remaining': 1, 'try': 1}" in tour.stdout


@pytest.fixture
def jobs_module(tmp_path: Path, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples/jobs.py imported on a file and a queue of this test's own."""
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.sqlite3"))
    monkeypatch.setenv("JOBS_QUEUE", redis_prefix)
    monkeypatch.setenv("JOBS_REDIS_URL", redis_server.REDIS_URL)
    spec = importlib.util.spec_from_file_location("examples_jobs_under_test", EXAMPLES / "jobs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # SQLAlchemy resolves Mapped[...] through it
    spec.loader.exec_module(module)
    module.create_tables()
    yield module
    module.celery_app.close()
    module.sync_db.dispose()


@pytest.mark.redis
def test_jobs_celery_task_on_a_real_worker(jobs_module: ModuleType) -> None:
    app, issue_token = jobs_module.celery_app, jobs_module.issue_token
    with pytest.raises(TypeError):
        issue_token.delay()  # checked against (email, ttl_seconds=3600) before anything is sent
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=15):
        first = issue_token.delay("ada@example.com").get(timeout=15)
        second = issue_token.delay("bob@example.com", ttl_seconds=-5).get(timeout=15)
    assert (first, second) == (1, 2)


@pytest.mark.redis
def test_outbox_tour_runs_the_committed_job_only(tmp_path: Path, redis_prefix: str) -> None:
    env = {
        "OUTBOX_DB": str(tmp_path / "outbox.sqlite3"),
        "OUTBOX_QUEUE": redis_prefix,
        "OUTBOX_REDIS_URL": redis_server.REDIS_URL,
    }
    tour = run("outbox.py", env=env)
    assert tour.returncode == 0, tour.stderr
    lines = tour.stdout.splitlines()
    message_id = lines[0].split(" job ")[1].split()[0]
    redis_server.delete_keys(message_id)  # arq's job and result keys are named by the job id alone
    assert lines[1:] == [
        "rolled back: sign-up of bob@example.com failed after enqueueing; its job never reaches arq",
        "relay: delivered 0 (the fast path left nothing behind)",
        "worker: 1 job(s) run",
        "user ada@example.com: welcomed=True",
    ]
