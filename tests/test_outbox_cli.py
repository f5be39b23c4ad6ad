"""`python -m uow.outbox`: the relay as a process of its own, and failed messages listed and requeued."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uow
from uow.outbox import Message, Outbox

ROOT = Path(__file__).resolve().parents[1]


class Refuses:
    def deliver(self, message: Message, /) -> None:
        raise ConnectionError("broker down")


def cli(*args: str, deliveries: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uow.outbox", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "UOW_OUTBOX_TEST_FILE": str(deliveries), "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.sqlite3'}"


def committed(url: str, count: int, *, runner: object = None, **options: object) -> list[str]:
    """`count` messages committed by a process that did not deliver them (fast_path=False, or a failing runner)."""
    database = uow.Database(url)
    outbox = Outbox(database, runner or Refuses(), fast_path=runner is not None, lease=0.001, **options)  # type: ignore[arg-type]
    asyncio.run(outbox.create_table())
    try:
        with uow.unit_of_work(database=database):
            ids = [outbox.enqueue("send_mail", n=n) for n in range(count)]
    finally:
        database.dispose()
    time.sleep(0.01)
    return ids


def test_relay_once_delivers_with_the_named_runner(url: str, tmp_path: Path) -> None:
    ids = committed(url, 2)
    deliveries = tmp_path / "delivered.txt"
    done = cli(
        "relay", "--database", url, "--runner", "tests.outbox_cli_runner:runner", "--once", deliveries=deliveries
    )
    assert done.returncode == 0, done.stderr
    assert "delivered 2" in done.stdout
    assert sorted(deliveries.read_text().splitlines()) == sorted(f"{i} send_mail" for i in ids)
    again = cli(
        "relay", "--database", url, "--runner", "tests.outbox_cli_runner:runner", "--once", deliveries=deliveries
    )
    assert "delivered 0" in again.stdout


def test_relay_runs_until_sigterm_with_a_runner_factory(url: str, tmp_path: Path) -> None:
    ids = committed(url, 3)
    deliveries = tmp_path / "delivered.txt"
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uow.outbox",
            "relay",
            "--database",
            url.replace("sqlite:", "sqlite+aiosqlite:"),
            "--runner",
            "tests.outbox_cli_runner:make_runner",
            "--interval",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "UOW_OUTBOX_TEST_FILE": str(deliveries), "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not deliveries.exists() or len(deliveries.read_text().splitlines()) < 3):
            time.sleep(0.05)
        relay.send_signal(signal.SIGTERM)
        out, err = relay.communicate(timeout=30)
    finally:
        relay.kill()
    assert relay.returncode == 0, err
    assert "stopped" in out
    assert sorted(line.split()[0] for line in deliveries.read_text().splitlines()) == sorted(ids)


def test_failed_messages_are_listed_and_requeued(url: str, tmp_path: Path) -> None:
    ids = committed(url, 2, runner=Refuses(), max_attempts=1)  # the fast path fails once: parked
    deliveries = tmp_path / "delivered.txt"
    listed = cli("failed", "--database", url, deliveries=deliveries)
    assert listed.returncode == 0, listed.stderr
    messages = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(m["id"] for m in messages) == sorted(ids)
    assert all(m["attempts"] == 1 and "broker down" in m["last_error"] for m in messages)
    requeued = cli("requeue", "--database", url, ids[0], deliveries=deliveries)
    assert "requeued 1" in requeued.stdout
    relayed = cli(
        "relay", "--database", url, "--runner", "tests.outbox_cli_runner:runner", "--once", deliveries=deliveries
    )
    assert "delivered 1" in relayed.stdout
    assert deliveries.read_text().split()[0] == ids[0]
    assert "requeued 1" in cli("requeue", "--database", url, deliveries=deliveries).stdout


@pytest.mark.parametrize(
    ("runner", "message"),
    [
        ("tests.outbox_cli_runner", "write it as 'package.module:name'"),
        ("tests.no_such_module:runner", "cannot import 'tests.no_such_module'"),
        ("tests.outbox_cli_runner:nothing", "has no 'nothing'"),
        ("tests.outbox_cli_runner:Path", "has no deliver(message) method"),
    ],
)
def test_a_bad_runner_is_refused_with_exit_code_2(url: str, tmp_path: Path, runner: str, message: str) -> None:
    committed(url, 0)
    done = cli("relay", "--database", url, "--runner", runner, "--once", deliveries=tmp_path / "d.txt")
    assert done.returncode == 2
    assert message in done.stderr
