"""`ErrorStreak`: one warning per failure streak, a summary, no traceback unless DEBUG."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from steadyloop._streak import ErrorStreak
from steadyloop.db.pragmas import SqlitePragmas
from steadyloop.db.sqlite import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log() -> logging.Logger:
    logger = logging.getLogger("steadyloop.test.streak")
    logger.setLevel(logging.INFO)
    return logger


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "steadyloop.test.streak"]


def test_many_failures_log_one_warning_then_the_recovery(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    clock = Clock()
    streak = ErrorStreak("poll", log, summary_every=60, clock=clock)
    for _ in range(40):
        streak.failed(ConnectionError("refused"), retry_in=0.5)
        clock.now += 0.3
    assert streak.failing
    assert streak.count == 40
    assert lines(caplog) == [
        "poll failed: ConnectionError: refused; retrying in 0.5s (logged once until it recovers)"
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback at INFO
    streak.succeeded()
    streak.succeeded()  # nothing open: nothing logged
    assert lines(caplog)[1:] == ["poll recovered after 40 failures in 12.0s"]
    assert not streak.failing
    assert streak.last_error is None


def test_a_long_streak_logs_a_summary_every_period(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    clock = Clock()
    streak = ErrorStreak("poll", log, summary_every=60, clock=clock)
    for _ in range(300):  # 150 s of failures, one every half second
        streak.failed(TimeoutError())
        clock.now += 0.5
    messages = lines(caplog)
    assert len(messages) == 3
    assert messages[0].startswith("poll failed: TimeoutError")
    assert messages[1] == "poll still failing: 121 failures in 60s; last: TimeoutError"
    assert messages[2] == "poll still failing: 241 failures in 120s; last: TimeoutError"


def test_a_quiet_gap_ends_a_streak_without_a_success(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    clock = Clock()
    streak = ErrorStreak("store", log, gap=10.0, clock=clock)
    for _ in range(5):
        streak.failed(OSError("down"))
        clock.now += 1
    clock.now += 30
    streak.failed(OSError("down again"))
    assert lines(caplog) == [
        "store failed: OSError: down (logged once until it recovers)",
        "store stopped failing after 5 failures in 4.0s",
        "store failed: OSError: down again (logged once until it recovers)",
    ]


def test_debug_keeps_the_traceback_of_the_first_failure(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    log.setLevel(logging.DEBUG)
    try:
        streak = ErrorStreak("poll", log)
        try:
            raise ConnectionError("refused")
        except ConnectionError as exc:
            streak.failed(exc)
            streak.failed(exc)
        [record] = [r for r in caplog.records if r.name == log.name]
        assert record.exc_info is not None
        assert record.exc_info[1] is not None
    finally:
        log.setLevel(logging.INFO)


def test_sparse_failures_log_one_line_each(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    clock = Clock()
    streak = ErrorStreak("cache", log, gap=10.0, clock=clock)
    for _ in range(3):
        streak.failed(OSError("down"))
        clock.now += 30
    assert lines(caplog) == ["cache failed: OSError: down (logged once until it recovers)"] * 3


def test_a_streak_is_shared_by_threads(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    streak = ErrorStreak("heartbeat", log)

    def fail() -> None:
        for _ in range(500):
            streak.failed(OSError("down"))

    threads = [threading.Thread(target=fail) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert streak.count == 2000
    assert len(lines(caplog)) == 1


def test_settle_counts_a_flapping_operation_as_one_streak(
    caplog: pytest.LogCaptureFixture, log: logging.Logger
) -> None:
    clock = Clock()
    streak = ErrorStreak("writes", log, settle=5.0, clock=clock)
    for _ in range(10):  # fail, succeed, fail, succeed... half a second apart
        streak.failed(OSError("full"))
        clock.now += 0.5
        streak.succeeded()
        clock.now += 0.5
    assert streak.failing
    assert streak.count == 10
    clock.now += 5
    streak.succeeded()
    assert lines(caplog) == [
        "writes failed: OSError: full (logged once until it recovers)",
        "writes recovered after 10 failures in 15.0s",
    ]


async def test_a_busy_write_lock_logs_two_lines_not_one_per_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop.db")
    path = tmp_path / "shared.db"
    async with Database(path, pragmas=SqlitePragmas(busy_timeout_ms=5), name="shared") as db:
        await db.execute_script("CREATE TABLE t(x INT)")
        other = sqlite3.connect(path, isolation_level=None)  # as another process would
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(db.write("INSERT INTO t VALUES (1)"))
        async with asyncio.timeout(10):
            while db._busy_streak.count < 3:
                await asyncio.sleep(0.005)
        other.execute("COMMIT")
        other.close()
        await write
    messages = [r.getMessage() for r in caplog.records if r.name == "steadyloop.db"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("database shared: write lock (held by another process) failed")
    assert "recovered after" in messages[1]
