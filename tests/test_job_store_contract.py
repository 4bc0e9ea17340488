"""One contract, every store: memory, SQLite and Redis behave the same."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from steadyloop.jobs.models import Job, JobError, JobProgress, JobStatus, new_job
from steadyloop.jobs.store import JobStore, Outcome, open_store

StoreFactory = Callable[[], JobStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory, so a test can reopen the same store (durability)."""
    if request.param == "memory":
        shared = open_store("memory://")
        return lambda: shared
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        return lambda: open_store(url)
    redis_url = request.getfixturevalue("redis_url")
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    return lambda: open_store(redis_url, prefix=prefix)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[JobStore]:
    s = make_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def job(task: str = "sync", **kwargs: object) -> Job:
    args = kwargs.pop("args", {"folder": "a"})
    return new_job(task, args, **kwargs)  # type: ignore[arg-type]


async def test_enqueue_and_get_round_trip(store: JobStore) -> None:
    original = job(args={"folder": "x", "n": 3, "tags": ["a"]}, max_retries=2, timeout=5.0)
    [stored] = await store.enqueue([original])
    assert stored == original
    fetched = await store.get(original.id)
    assert fetched == original
    assert await store.get("0" * 32) is None
    assert await store.ping()


async def test_unique_key_dedupes_while_active_only(store: JobStore) -> None:
    first = job(unique_key="rescan")
    [a] = await store.enqueue([first])
    [b] = await store.enqueue([job(unique_key="rescan")])
    assert b.id == a.id  # the active job stands in for the duplicate
    [claimed] = await store.claim("w1", ["sync"], 10, 30)
    [c] = await store.enqueue([job(unique_key="rescan")])
    assert c.id == a.id  # still active while running
    await store.finish("w1", [Outcome(claimed.id, "succeeded", result=1)])
    [d] = await store.enqueue([job(unique_key="rescan")])
    assert d.id != a.id  # finished: the key is free again
    batch = await store.enqueue([job(unique_key="k2"), job(unique_key="k2")])
    assert batch[0].id == batch[1].id


async def test_claim_takes_due_jobs_of_known_tasks_in_order(store: JobStore) -> None:
    now = time.time()
    late = job(now=now - 10)
    early = job(now=now - 20)
    other_task = job("thumbnails")
    future = job(run_at=now + 3600)
    await store.enqueue([late, early, other_task, future])
    assert future.status is JobStatus.scheduled
    claimed = await store.claim("w1", ["sync"], 1, 30)
    assert [j.id for j in claimed] == [early.id]
    [running] = claimed
    assert running.status is JobStatus.running
    assert running.attempt == 1
    assert running.worker_id == "w1"
    assert running.lease_expires_at is not None
    assert running.lease_expires_at > time.time()
    rest = await store.claim("w2", ["sync"], 10, 30)
    assert [j.id for j in rest] == [late.id]  # not the future one, not the other task
    assert await store.claim("w3", ["sync", "thumbnails"], 10, 30) == [
        await store.get(other_task.id)
    ]


async def test_concurrent_claimers_never_share_a_job(store: JobStore) -> None:
    await store.enqueue([job() for _ in range(120)])

    async def worker(name: str) -> list[str]:
        taken: list[str] = []
        while batch := await store.claim(name, ["sync"], 7, 30):
            taken += [j.id for j in batch]
        return taken

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(8)))
    everything = [i for r in results for i in r]
    assert len(everything) == 120
    assert len(set(everything)) == 120


async def test_expired_lease_is_redelivered_and_then_fails_when_out_of_attempts(
    store: JobStore,
) -> None:
    [queued] = await store.enqueue([job(max_retries=1)])
    assert queued.max_deliveries == 4  # 2 attempts, plus 2 deliveries lost to dead workers
    [first] = await store.claim("dead-worker", ["sync"], 1, 0)  # lease already over
    assert first.attempt == 1
    [second] = await store.claim("w2", ["sync"], 1, 0)
    assert second.id == queued.id
    assert second.attempt == 2
    assert second.worker_id == "w2"
    for attempt in (3, 4):  # a crash does not use up retries: delivered again
        [again] = await store.claim(f"w{attempt}", ["sync"], 1, 0)
        assert again.attempt == attempt
    assert await store.claim("w5", ["sync"], 1, 30) == []  # every delivery used: failed
    failed = await store.get(queued.id)
    assert failed is not None
    assert failed.status is JobStatus.failed
    assert failed.error is not None
    assert failed.error.type == "LeaseExpired"
    # The dead worker's late outcome is ignored.
    await store.finish("dead-worker", [Outcome(queued.id, "succeeded", result="late")])
    after = await store.get(queued.id)
    assert after is not None
    assert after.status is JobStatus.failed


async def test_heartbeat_extends_leases_and_reports_what_to_stop(store: JobStore) -> None:
    a, b, c = job(), job(), job()
    await store.enqueue([a, b, c])
    claimed = await store.claim("w1", ["sync"], 3, 0)
    assert len(claimed) == 3
    stop = await asyncio.to_thread(store.heartbeat, "w1", [a.id, b.id, c.id], 60)
    assert stop == []
    assert await store.claim("w2", ["sync"], 3, 30) == []  # leases renewed: nothing stolen
    await store.cancel(b.id)
    stop = await asyncio.to_thread(store.heartbeat, "w1", [a.id, b.id, "unknown"], 60)
    assert sorted(stop) == sorted([b.id, "unknown"])
    stop = await asyncio.to_thread(store.heartbeat, "w2", [a.id], 60)
    assert stop == [a.id]  # not w2's job


async def test_finish_records_each_kind_of_outcome(store: JobStore) -> None:
    jobs = [job() for _ in range(4)]
    await store.enqueue(jobs)
    await store.claim("w1", ["sync"], 4, 30)
    retry_at = time.time() + 3600
    await store.finish(
        "w1",
        [
            Outcome(jobs[0].id, "succeeded", result={"videos": 3}),
            Outcome(jobs[1].id, "failed", error=JobError(type="ValueError", message="bad")),
            Outcome(jobs[2].id, "cancelled"),
            Outcome(
                jobs[3].id, "retry", error=JobError(type="Timeout", message="t"), retry_at=retry_at
            ),
        ],
    )
    done, failed, cancelled, retrying = [await store.get(j.id) for j in jobs]
    assert done is not None
    assert failed is not None
    assert cancelled is not None
    assert retrying is not None
    assert (done.status, done.result) == (JobStatus.succeeded, {"videos": 3})
    assert done.finished_at is not None
    assert failed.status is JobStatus.failed
    assert failed.error == JobError(type="ValueError", message="bad")
    assert cancelled.status is JobStatus.cancelled
    assert retrying.status is JobStatus.scheduled
    assert retrying.run_at == pytest.approx(retry_at)
    assert retrying.attempt == 1
    assert retrying.failures == 1  # counted for the retry budget
    assert done.failures == 0
    assert retrying.worker_id is None
    assert await store.claim("w1", ["sync"], 4, 30) == []  # backing off: not due yet


async def test_release_makes_jobs_claimable_at_once_without_using_an_attempt(
    store: JobStore,
) -> None:
    a = job()
    await store.enqueue([a])
    await store.claim("w1", ["sync"], 1, 30)
    await store.release("w1", [a.id])
    released = await store.get(a.id)
    assert released is not None
    assert released.status is JobStatus.queued
    assert released.attempt == 0
    [again] = await store.claim("w2", ["sync"], 1, 30)
    assert again.id == a.id
    assert again.attempt == 1


async def test_cancel(store: JobStore) -> None:
    queued, running = job(), job(run_at=time.time() - 1)
    await store.enqueue([running])
    await store.claim("w1", ["sync"], 1, 30)
    await store.enqueue([queued])
    cancelled = await store.cancel(queued.id)
    assert cancelled is not None
    assert cancelled.status is JobStatus.cancelled
    requested = await store.cancel(running.id)
    assert requested is not None
    assert requested.status is JobStatus.running
    assert requested.cancel_requested
    assert await store.cancel("f" * 32) is None
    assert await store.claim("w2", ["sync"], 5, 30) == []  # a cancelled job never runs


async def test_list_pages_newest_first_with_a_status_filter(store: JobStore) -> None:
    now = time.time()
    jobs = [job(now=now - 100 + i) for i in range(25)]
    await store.enqueue(jobs)
    await store.claim("w1", ["sync"], 5, 30)  # the 5 oldest are running
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list(None, 10, cursor)
        seen += [j.id for j in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted((j.id for j in jobs), reverse=True)
    running = await store.list(JobStatus.running, 100, None)
    assert sorted(j.id for j in running.items) == sorted(j.id for j in jobs[:5])
    assert running.next_cursor is None
    counts = await store.counts()
    assert counts[JobStatus.running] == 5
    assert counts[JobStatus.queued] == 20
    assert counts[JobStatus.failed] == 0


async def test_progress_only_from_the_owner(store: JobStore) -> None:
    a = job()
    await store.enqueue([a])
    await store.claim("w1", ["sync"], 1, 30)
    await store.set_progress("w1", a.id, JobProgress(fraction=0.5, message="half"))
    await store.set_progress("w2", a.id, JobProgress(fraction=0.9))
    current = await store.get(a.id)
    assert current is not None
    assert current.progress == JobProgress(fraction=0.5, message="half")


async def test_claim_slot_is_insert_if_absent_under_concurrency(store: JobStore) -> None:
    wins = await asyncio.gather(*(store.claim_slot("cleanup:1000", 60) for _ in range(20)))
    assert wins.count(True) == 1
    assert await store.claim_slot("cleanup:1001", 60)


async def test_purge_removes_only_old_finished_jobs(store: JobStore) -> None:
    done, active = job(), job()
    await store.enqueue([done])
    await store.claim("w1", ["sync"], 1, 30)
    await store.finish("w1", [Outcome(done.id, "succeeded")])
    await store.enqueue([active])
    assert await store.purge(time.time() - 3600) == 0
    assert await store.purge(time.time() + 1) == 1
    assert await store.get(done.id) is None
    assert await store.get(active.id) is not None


async def _finish_one_by_one(store: JobStore, count: int) -> list[Job]:
    done = []
    for _ in range(count):
        one = job()
        await store.enqueue([one])
        [claimed] = await store.claim("w1", ["sync"], 1, 30)
        await store.finish("w1", [Outcome(claimed.id, "succeeded")])
        done.append(one)
    return done


async def test_purge_keeps_only_the_most_recently_finished(store: JobStore) -> None:
    done = await _finish_one_by_one(store, 5)
    cancelled = job()
    await store.enqueue([cancelled])
    await store.cancel(cancelled.id)  # finished last: the newest
    active = job(unique_key="still-here")
    await store.enqueue([active])
    assert await store.purge(0.0, keep=3) == 3
    kept = [j.id for j in (await store.list(None, 10, None)).items]
    assert sorted(kept) == sorted([done[3].id, done[4].id, cancelled.id, active.id])
    assert await store.purge(0.0, keep=3) == 0
    counts = await store.counts()
    assert (counts[JobStatus.succeeded], counts[JobStatus.cancelled]) == (2, 1)
    assert counts[JobStatus.queued] == 1


async def test_purge_applies_age_and_count_together(store: JobStore) -> None:
    await _finish_one_by_one(store, 4)
    assert await store.purge(time.time() - 3600, keep=10) == 0  # neither limit reached
    assert await store.purge(time.time() + 1, keep=10) == 4  # all are past the age limit
    assert (await store.counts())[JobStatus.succeeded] == 0


async def test_purge_with_keep_zero_leaves_active_jobs(store: JobStore) -> None:
    await _finish_one_by_one(store, 3)
    queued, running = job(), job()
    await store.enqueue([running])
    await store.claim("w2", ["sync"], 1, 30)
    await store.enqueue([queued])
    assert await store.purge(0.0, keep=0) == 3
    assert (await store.get(queued.id)) is not None
    current = await store.get(running.id)
    assert current is not None
    assert current.status is JobStatus.running


async def test_jobs_survive_reopening_the_store(
    make_store: StoreFactory, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["make_store"] == "memory":
        pytest.skip("the memory store keeps nothing across restarts, by design")
    first = make_store()
    await first.open()
    a, b = job(), job()
    await first.enqueue([a, b])
    await first.claim("w1", ["sync"], 1, 30)
    await first.close()
    second = make_store()
    await second.open()
    try:
        statuses = {j.id: j.status for j in (await second.list(None, 10, None)).items}
        assert statuses == {a.id: JobStatus.running, b.id: JobStatus.queued}
    finally:
        await second.close()
