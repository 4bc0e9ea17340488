"""What only the Redis store does: shared round trips, several processes, off-loop heartbeats."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("redis")

import redis
import redis.asyncio as aioredis

from steadyloop.jobs.memory import MemoryJobStore
from steadyloop.jobs.models import Job, JobStatus, new_job
from steadyloop.jobs.redis import RedisJobStore
from steadyloop.jobs.redis_pinned import PinnedScript
from steadyloop.jobs.store import Outcome


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisJobStore]:
    s = RedisJobStore(redis_url, prefix=prefix)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def evalsha_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SHA of every script the asyncio client runs from now on: one per round trip."""
    calls: list[str] = []
    original = aioredis.Redis.evalsha

    def spy(self: aioredis.Redis, sha: str, numkeys: int, *args: Any) -> Any:
        calls.append(sha)
        return original(self, sha, numkeys, *args)

    monkeypatch.setattr(aioredis.Redis, "evalsha", spy)
    # The store's hot writes go pre-encoded over their own connection: count those too.
    sent = PinnedScript._call

    async def pinned_spy(self: PinnedScript, packed: bytes) -> Any:
        calls.append(self._script.sha)
        return await sent(self, packed)

    monkeypatch.setattr(PinnedScript, "_call", pinned_spy)
    return calls


def job(task: str = "sync", **kwargs: Any) -> Job:
    return new_job(task, kwargs.pop("args", {"folder": "a"}), **kwargs)


async def test_concurrent_enqueues_share_round_trips(
    store: RedisJobStore, evalsha_calls: list[str]
) -> None:
    await store.ping()  # connect first, so only the enqueues below run scripts
    jobs = [job(args={"n": i}) for i in range(50)]
    results = await asyncio.gather(*(store.enqueue([j]) for j in jobs))
    assert [r for [r] in results] == jobs  # each caller gets its own job back
    assert 1 <= len(evalsha_calls) < len(jobs)
    assert (await store.counts())[JobStatus.queued] == 50

    evalsha_calls.clear()
    await store.enqueue([job(), job(), job()])
    assert len(evalsha_calls) == 1  # a lone caller: one round trip, whatever the batch size


async def test_coalesced_enqueues_still_dedupe_across_callers(
    store: RedisJobStore, evalsha_calls: list[str]
) -> None:
    results = await asyncio.gather(*(store.enqueue([job(unique_key="scan")]) for _ in range(20)))
    assert len({r.id for [r] in results}) == 1
    assert len(evalsha_calls) < 20
    assert (await store.counts())[JobStatus.queued] == 1


async def test_concurrent_finishes_share_round_trips(
    store: RedisJobStore, evalsha_calls: list[str]
) -> None:
    jobs = [job() for _ in range(30)]
    await store.enqueue(jobs)
    claimed = await store.claim("w1", ["sync"], 30, 60)
    evalsha_calls.clear()
    await asyncio.gather(
        *(store.finish("w1", [Outcome(j.id, "succeeded", result=j.args)]) for j in claimed)
    )
    assert 1 <= len(evalsha_calls) < len(claimed)
    for j in jobs:
        done = await store.get(j.id)
        assert done is not None
        assert (done.status, done.result) == (JobStatus.succeeded, {"folder": "a"})


async def test_a_bad_caller_does_not_fail_the_callers_it_would_share_a_flush_with(
    store: RedisJobStore,
) -> None:
    good = job()
    bad = job(args={"when": object()})
    outcomes = await asyncio.gather(
        store.enqueue([good]), store.enqueue([bad]), return_exceptions=True
    )
    assert outcomes[0] == [good]
    assert isinstance(outcomes[1], Exception)
    assert await store.get(good.id) == good
    assert await store.get(bad.id) is None


_OTHER_PROCESS = """
import asyncio, json, sys
from steadyloop.jobs.redis import RedisJobStore

async def main() -> None:
    store = RedisJobStore(sys.argv[1], prefix=sys.argv[2])
    await store.open()
    try:
        claimed = await store.claim("other-process", ["sync"], 10, 60)
        print(json.dumps([j.id for j in claimed]))
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_another_process_on_the_same_prefix_sees_and_changes_the_same_jobs(
    store: RedisJobStore, redis_url: str, prefix: str
) -> None:
    a, b = job(now=time.time() - 2), job(now=time.time() - 1)
    await store.enqueue([a, b])
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, redis_url, prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [a.id, b.id]  # it saw this process's jobs
    for j in (a, b):
        seen = await store.get(j.id)  # and this process sees what it did
        assert seen is not None
        assert (seen.status, seen.worker_id, seen.attempt) == (
            JobStatus.running,
            "other-process",
            1,
        )
    assert await store.claim("w1", ["sync"], 10, 60) == []
    assert store.heartbeat("w1", [a.id], 60) == [a.id]  # not this worker's job


async def test_heartbeat_works_while_the_event_loop_is_blocked(store: RedisJobStore) -> None:
    a = job()
    await store.enqueue([a])
    [claimed] = await store.claim("w1", ["sync"], 1, 0)  # the lease is already over
    assert claimed.lease_expires_at is not None
    returned = threading.Event()
    outcome: dict[str, Any] = {}

    def beat() -> None:
        try:
            outcome["stop"] = store.heartbeat("w1", [a.id], 60)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            returned.set()

    thread = threading.Thread(target=beat)
    thread.start()
    # The loop thread blocks here: a heartbeat needing the loop could never return.
    assert returned.wait(timeout=30), "the heartbeat needed the blocked event loop"
    thread.join()
    assert outcome == {"stop": []}
    renewed = await store.get(a.id)
    assert renewed is not None
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > claimed.lease_expires_at
    assert await store.claim("w2", ["sync"], 1, 30) == []  # renewed: nothing to steal


async def test_a_lapsed_lease_renewed_before_redelivery_keeps_its_job(
    store: RedisJobStore,
) -> None:
    a = job()
    await store.enqueue([a])
    await store.claim("w1", ["sync"], 1, 0)
    assert await store.claim("w2", ["other"], 1, 30) == []  # moves the lapsed lease back to due
    assert store.heartbeat("w1", [a.id], 60) == []  # w1 was slow, not dead
    assert await store.claim("w2", ["sync"], 1, 30) == []
    await store.finish("w1", [Outcome(a.id, "succeeded")])
    finished = await store.get(a.id)
    assert finished is not None
    assert finished.status is JobStatus.succeeded


async def test_claim_matches_the_memory_store_across_tasks_redeliveries_and_failures(
    store: RedisJobStore,
) -> None:
    memory = MemoryJobStore()
    now = time.time()
    exhausted = [job("a", now=now - 50 + i) for i in range(3)]  # fail on the next lapse
    redelivered = [job("b", max_retries=1, now=now - 40 + i) for i in range(2)]
    fresh = [job("a" if i % 2 else "b", now=now - 30 + i) for i in range(6)]
    for s in (store, memory):
        await s.enqueue(exhausted)
        for _ in range(exhausted[0].max_deliveries):  # every delivery lost to a dead worker
            assert len(await s.claim("dead", ["a"], 10, 0)) == 3
        await s.enqueue(redelivered)
        await s.claim("dead", ["b"], 10, 0)
        await s.enqueue(fresh)
    for limit in (2, 3, 10):
        got = await store.claim("w", ["a", "b", "c"], limit, 60)
        expected = await memory.claim("w", ["a", "b", "c"], limit, 60)
        assert [(j.id, j.attempt) for j in got] == [(j.id, j.attempt) for j in expected]
    for j in exhausted:
        failed = await store.get(j.id)
        assert failed is not None
        assert failed.status is JobStatus.failed
        assert failed.error is not None
        assert failed.error.type == "LeaseExpired"
    assert await store.counts() == await memory.counts()


async def test_purge_in_batches_leaves_no_key_behind(redis_url: str, prefix: str) -> None:
    store = RedisJobStore(redis_url, prefix=prefix, purge_batch=4)
    await store.open()
    try:
        jobs = [job(unique_key=f"k{i}") for i in range(10)]
        await store.enqueue(jobs)
        claimed = await store.claim("w1", ["sync"], 10, 60)
        await store.finish("w1", [Outcome(j.id, "succeeded") for j in claimed[:9]])
        await store.cancel(claimed[9].id)  # running: only asks it to stop
        await store.finish("w1", [Outcome(claimed[9].id, "cancelled")])
        assert await store.purge(time.time() + 1) == 10
        assert await store.counts() == dict.fromkeys(JobStatus, 0)
        assert (await store.list(None, 10, None)).items == []
    finally:
        await store.close()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        left = list(client.scan_iter(match=f"{prefix}:*"))
    finally:
        client.close()
    assert left == []


async def test_list_orders_any_ids_like_the_memory_store(store: RedisJobStore) -> None:
    memory = MemoryJobStore()
    ids = ["job-b", "job_a", "Job.c", "job-B", "jób", "job", "0", "~z"]
    jobs = [job().model_copy(update={"id": i}) for i in ids]
    for s in (store, memory):
        await s.enqueue(jobs)
        await s.claim("w1", ["sync"], 3, 60)  # spread them over two statuses
    for status in (None, JobStatus.queued, JobStatus.running):
        pages: dict[str, list[list[str]]] = {}
        for name, s in (("redis", store), ("memory", memory)):
            cursor, pages[name] = None, []
            while True:
                page = await s.list(status, 3, cursor)
                pages[name].append([j.id for j in page.items])
                if (cursor := page.next_cursor) is None:
                    break
        assert pages["redis"] == pages["memory"]


async def test_close_waits_for_a_coalesced_write_in_flight(redis_url: str, prefix: str) -> None:
    store = RedisJobStore(redis_url, prefix=prefix)
    await store.open()
    a = job()
    [stored], _ = await asyncio.gather(store.enqueue([a]), store.close())  # enqueue goes first
    assert stored == a
    with pytest.raises(RuntimeError):
        await store.enqueue([job()])  # closed
    await store.open()
    try:
        assert await store.get(a.id) == a
    finally:
        await store.close()


async def test_a_lone_caller_flushes_in_its_own_task_and_overlapping_callers_merge() -> None:
    from steadyloop.jobs.redis import _Coalescer

    release = asyncio.Event()
    batches: list[tuple[list[int], asyncio.Task[Any] | None]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append((items, asyncio.current_task()))
        if len(batches) == 1:
            await release.wait()  # the first flush is in flight while the others arrive
        return [item * 10 for item in items]

    coalescer: _Coalescer[int, int] = _Coalescer(flush, max_batch=100)
    lone = asyncio.create_task(coalescer.submit([1]))
    while not batches:
        await asyncio.sleep(0)
    assert batches[0] == ([1], lone)  # no hop through a drain task
    others = [asyncio.create_task(coalescer.submit([n])) for n in (2, 3, 4)]
    while len(coalescer._pending) < 3:  # let them queue behind the flush in flight
        await asyncio.sleep(0)
    release.set()
    assert await lone == [10]
    assert [await t for t in others] == [[20], [30], [40]]
    assert [items for items, _ in batches] == [[1], [2, 3, 4]]  # merged into one flush


async def test_a_pinned_script_loads_itself_when_redis_does_not_know_it(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    # A body no one loaded yet: the first EVALSHA gets NOSCRIPT.
    script = client.register_script(f"return {{'{prefix}', ARGV[1], #ARGV}}")
    pinned = PinnedScript(client, script)
    try:
        assert not (await client.script_exists(script.sha))[0]
        assert await pinned(["é\r\n$3", "b"]) == [prefix, "é\r\n$3", 2]  # RESP-safe arguments
        assert (await client.script_exists(script.sha))[0]
        assert await pinned(["again"]) == [prefix, "again", 1]
    finally:
        await pinned.aclose()
        await client.aclose()


async def test_a_pinned_script_busy_with_one_call_sends_the_next_through_the_pool(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    script = client.register_script(f"return ARGV[1] .. '{prefix}'")
    pinned = PinnedScript(client, script)
    try:
        results = await asyncio.gather(*(pinned([str(i)]) for i in range(20)))
        assert results == [f"{i}{prefix}" for i in range(20)]  # each caller its own reply
    finally:
        await pinned.aclose()
        await client.aclose()
