"""The Redis job store: jobs shared by every process and host that reaches one Redis.

Data model (every key starts with the store's `prefix`, written `P` here):
- `P:job:{id}` — a hash per job. `spec` holds the JSON of the fields that never change (id,
  args, timeout, backoff, created_at, request_id, trace_context); the scripts read and write
  the others as plain fields: `task`, `max_retries`, `unique_key`, `status`, `attempt`, `run_at`,
  `updated_at`, `started_at`, `finished_at`, `worker_id`, `lease_expires_at`,
  `cancel_requested` ("1" or absent), and the JSON of `result`, `error` and `progress`.
  A field that is None is absent. No script ever decodes JSON: user data goes through Redis
  untouched, and a state change only writes the few small fields it changes.
- `P:due:{task}` — a sorted set per task of the jobs waiting to run, scored by `run_at`
  (ties: by id, the sorted set's own order, which is what the other stores sort by too).
  Queued and scheduled jobs live here, and so do running jobs whose lease lapsed (below).
- `P:leases` — a sorted set of running jobs scored by `lease_expires_at`.
- `P:status:{status}` — one sorted set per status, every member scored 0 so that it is
  ordered by id; ids sort by creation time, so `ZREVRANGEBYLEX` pages newest first with
  the last id seen as the cursor, and `ZCARD` counts.
- `P:finished` — finished jobs scored by `finished_at`, for `purge`.
- `P:unique` — a hash from `unique_key` to the id of the active job holding it.
- `P:slot:{key}` — a string per claimed periodic slot, set with `SET NX PX`.

Atomicity: every operation that changes state is one Lua script (`EVALSHA`), which Redis runs
without interleaving any other command, so each is atomic with respect to every other client
and process; nothing is read, changed in Python and written back. The scripts take input
validated and encoded in Python, so they do not fail halfway (Redis does not roll back a
script that errors). Per operation:
- `enqueue`: one script for the whole batch. For each job with a `unique_key`, the holder is
  looked up in `P:unique` and its status checked in the same script that inserts the job and
  records the key, so two enqueuers can never both insert.
- `claim`: one script. It first moves lapsed leases (at most `reap_batch` per call) from
  `P:leases` back into their task's due set under their `run_at`: such a job is still
  running, so its worker's heartbeat or outcome still counts until someone claims it, exactly
  as in the memory store. It then merges the due sets of the wanted tasks by (`run_at`, id),
  takes jobs until `limit` are claimed — a lapsed job that used all its deliveries
  (`Job.max_deliveries`) is failed with "LeaseExpired" and does not count — and moves each
  claimed job into `P:leases` and the running index. Two claimers run one after the other,
  so they never share a job.
- `heartbeat`: one script that, for each job still running under the worker, moves the
  lease forward in the hash and in `P:leases` (and out of the due set if it had lapsed), and
  returns the ids the worker must stop.
- `finish`, `release`, `set_progress`, `cancel`: one script each, checking the status and
  owner of each job and moving it between the indexes in the same step.
- `purge`: one script per batch of `purge_batch` jobs from the old end of `P:finished` (past
  the age limit, or past the `keep` newest, counted with `ZCARD`); each batch is
  atomic, the purge as a whole is not (nor needs to be: finished jobs never change).
- `list` and `counts` read in one script or one MULTI: a consistent snapshot.
- `claim_slot`: `SET NX PX`, atomic in Redis itself.

Clock: every time a script records (`started_at`, `updated_at`, `finished_at`, lease
expiries) and every "now" it compares against comes from the Redis server (`TIME` inside the
script), so leases mean the same thing to every worker on every host, whatever their clocks
say: a worker on a host running ahead cannot steal leases early. The times a job is created
with (`created_at`, `run_at`, a retry's `retry_at`) come from the enqueuing process's clock
(`new_job`, the worker's backoff), so across hosts a delayed job or a retry runs late or
early by the skew between that host and the Redis server; keep hosts NTP-synchronised.
Scripts that call `TIME` need effects replication, the only mode since Redis 7 and the
default since Redis 5.

Coalescing: concurrent `enqueue` calls share round trips, and so do concurrent `finish` calls
(group commit). When nothing is in flight, a call flushes at once in its own task (no
timer, no hop through another task: a lone caller pays exactly one round trip); calls that
arrive while a flush is in flight wait and all go together in the next one, up to
`max_batch` jobs (one caller's list is never split). Each caller gets its own results or
the flush's error; a caller cancelled before its flush was sent is left out of it. Each
caller's jobs are encoded before they join a batch, so one caller's bad input cannot fail the
others.

Connections: `redis.asyncio` for every coroutine, and a separate synchronous `redis.Redis`
client for `heartbeat`, which runs in a plain thread while the event loop may be blocked and
so must not depend on it. Both use blocking pools of `max_connections` (a caller waits for a
free connection instead of failing). The hot scripts (`enqueue`, `finish`, `claim`) skip the
pool: each holds one connection of its own and sends its `EVALSHA` pre-encoded
(`redis_pinned.PinnedScript`); a call that finds that connection busy goes through the pool.
hiredis parses replies when it is installed.

Redis Cluster is not supported: the scripts touch keys they compute (one job's task decides
its due set), which Cluster allows only within one hash slot.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Collection, Sequence
from typing import Any, TypeVar, cast

from pydantic_core import to_json

try:
    from redis.commands.core import AsyncScript, Script
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "steadyloop.jobs.redis needs redis-py: install the extra with "
        "`pip install 'steadyloop[redis]'` (and `hiredis` for faster parsing)"
    ) from exc

from steadyloop._coalesce import Coalescer
from steadyloop.jobs.models import (
    LEASE_LOST,
    LOST_WORKER_REDELIVERIES,
    Job,
    JobProgress,
    JobStatus,
)
from steadyloop.jobs.redis_pinned import PinnedScript
from steadyloop.jobs.store import JobPage, Outcome
from steadyloop.redis_client import async_redis, sync_redis

__all__ = ["RedisJobStore"]


# A job's hash fields in the order scripts return them (`HMGET`; an absent field is None).
_ROW = (
    "spec",
    "task",
    "max_retries",
    "status",
    "attempt",
    "run_at",
    "updated_at",
    "unique_key",
    "worker_id",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "cancel_requested",
    "result",
    "error",
    "progress",
    "failures",
)
_ALL_STATUSES = tuple(s.value for s in JobStatus)

_T = TypeVar("_T")
_R = TypeVar("_R")

# ---------------------------------------------------------------------------------------------
# Lua. ARGV[1] is always the key prefix. Times are decimal strings with microseconds.

_PRELUDE = """
local p = ARGV[1]
local LEASES = p .. ':leases'
local FINISHED = p .. ':finished'
local UNIQUE = p .. ':unique'

local function job_key(id) return p .. ':job:' .. id end
local function row(id) return redis.call('HMGET', job_key(id), unpack(ROW)) end
local function due_key(task) return p .. ':due:' .. task end
local function status_key(status) return p .. ':status:' .. status end

-- Byte order, as sorted sets and Python order strings (Lua's `<` follows the server's locale).
local function str_less(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function clock()
  local t = redis.call('TIME')
  return string.format('%s.%06d', t[1], tonumber(t[2]))
end

local function move(id, from, to)
  if from ~= to then
    redis.call('ZREM', status_key(from), id)
    redis.call('ZADD', status_key(to), 0, id)
  end
end

local function free_unique(id, ukey)
  if ukey and ukey ~= '' and redis.call('HGET', UNIQUE, ukey) == id then
    redis.call('HDEL', UNIQUE, ukey)
  end
end

-- A queued, scheduled or running job ends: out of every queue, into the finished index.
local function finish(id, task, from, ukey, status, now, result, err)
  local key = job_key(id)
  redis.call('HDEL', key, 'result', 'error', 'lease_expires_at')
  local fields = {'status', status, 'finished_at', now, 'updated_at', now}
  if result ~= '' then
    fields[#fields + 1] = 'result'
    fields[#fields + 1] = result
  end
  if err ~= '' then
    fields[#fields + 1] = 'error'
    fields[#fields + 1] = err
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('ZREM', due_key(task), id)
  redis.call('ZREM', LEASES, id)
  move(id, from, status)
  redis.call('ZADD', FINISHED, now, id)
  free_unique(id, ukey)
end
"""

# ARGV: prefix, then per job: id, task, status, run_at, updated_at, attempt, max_retries, spec,
# unique key to dedupe on or '', n, then n more field/value pairs (the optional fields set).
# Returns per job 0 (inserted as given) or the row of the active job holding its unique key.
_ENQUEUE = """
local function forget(id)
  local f = redis.call('HMGET', job_key(id), 'status', 'task', 'unique_key')
  redis.call('ZREM', status_key(f[1]), id)
  redis.call('ZREM', due_key(f[2]), id)
  redis.call('ZREM', LEASES, id)
  redis.call('ZREM', FINISHED, id)
  free_unique(id, f[3])
  redis.call('DEL', job_key(id))
end

local out = {}
local i = 2
while i <= #ARGV do
  local id, task, status, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ukey, n = ARGV[i + 8], tonumber(ARGV[i + 9])
  local first = i + 10
  local key = job_key(id)
  local holder = false
  if ukey ~= '' then
    holder = redis.call('HGET', UNIQUE, ukey)
    if holder then
      local st = redis.call('HGET', job_key(holder), 'status')
      if st ~= 'queued' and st ~= 'scheduled' and st ~= 'running' then holder = false end
    end
  end
  if holder then
    out[#out + 1] = row(holder)
  else
    if redis.call('EXISTS', key) == 1 then forget(id) end
    if ukey == '' then
      redis.call('HSET', key, 'spec', ARGV[i + 7], 'task', task, 'max_retries', ARGV[i + 6],
        'status', status, 'attempt', ARGV[i + 5], 'run_at', run_at, 'updated_at', ARGV[i + 4])
    else
      redis.call('HSET', key, 'spec', ARGV[i + 7], 'task', task, 'max_retries', ARGV[i + 6],
        'status', status, 'attempt', ARGV[i + 5], 'run_at', run_at, 'updated_at', ARGV[i + 4],
        'unique_key', ukey)
    end
    if n > 0 then redis.call('HSET', key, unpack(ARGV, first, first + n - 1)) end
    redis.call('ZADD', status_key(status), 0, id)
    local active = true
    if status == 'queued' or status == 'scheduled' then
      redis.call('ZADD', due_key(task), run_at, id)
    elseif status == 'running' then
      redis.call('ZADD', LEASES, redis.call('HGET', key, 'lease_expires_at') or '0', id)
    else
      redis.call('ZADD', FINISHED, redis.call('HGET', key, 'finished_at') or '0', id)
      active = false
    end
    if active and ukey ~= '' then redis.call('HSET', UNIQUE, ukey, id) end
    out[#out + 1] = 0
  end
  i = first + n
end
return out
"""

# ARGV: prefix, worker id, limit, lease seconds, reap batch, tasks...
# Returns the rows of the claimed jobs, earliest run_at first.
_CLAIM = """
local worker, limit, lease, reap = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local nows = clock()
local now = tonumber(nows)
local lease_at = string.format('%.6f', now + lease)

-- Lapsed leases go back to their task's due set: still running (the worker may yet renew
-- or finish), claimable below in run_at order with the rest.
local lapsed = redis.call('ZRANGEBYSCORE', LEASES, '-inf', nows, 'LIMIT', 0, reap)
for _, id in ipairs(lapsed) do
  local f = redis.call('HMGET', job_key(id), 'task', 'run_at')
  if f[1] then redis.call('ZADD', due_key(f[1]), f[2], id) end
  redis.call('ZREM', LEASES, id)
end

local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return str_less(a[2], b[2])
end

local out = {}
local taken = 0
while taken < limit do
  local want = limit - taken
  -- The first `want` of each task's due set; past the smallest last element of a set that
  -- may hold more, the merged order is not known yet: stop there and fetch again.
  local cands, bound = {}, nil
  for t = 6, #ARGV do
    local task = ARGV[t]
    local r = redis.call('ZRANGEBYSCORE', due_key(task), '-inf', nows,
      'WITHSCORES', 'LIMIT', 0, want)
    for j = 1, #r, 2 do cands[#cands + 1] = {tonumber(r[j + 1]), r[j], task} end
    if #r == 2 * want then
      local last = cands[#cands]
      if bound == nil or before(last, bound) then bound = last end
    end
  end
  if #cands == 0 then break end
  if #ARGV > 6 then table.sort(cands, before) end
  for _, c in ipairs(cands) do
    if taken == limit or (bound ~= nil and before(bound, c)) then break end
    local id, task = c[2], c[3]
    local key = job_key(id)
    local f = redis.call('HMGET', key, 'status', 'attempt', 'max_retries', 'unique_key',
      'lease_expires_at')
    local status = f[1]
    local lapsed_run = status == 'running' and tonumber(f[5] or '0') <= now
    if status == 'queued' or status == 'scheduled' or lapsed_run then
      local attempt = tonumber(f[2])
      if lapsed_run and attempt >= tonumber(f[3]) + 1 + LOST_WORKER_REDELIVERIES then
        finish(id, task, status, f[4], 'failed', nows, '', LEASE_LOST)
      else
        redis.call('HSET', key, 'status', 'running', 'attempt', tostring(attempt + 1),
          'worker_id', worker, 'lease_expires_at', lease_at, 'started_at', nows, 'updated_at', nows)
        redis.call('ZREM', due_key(task), id)
        redis.call('ZADD', LEASES, lease_at, id)
        move(id, status, 'running')
        taken = taken + 1
        out[taken] = row(id)
      end
    else
      -- Not waiting any more (renewed after lapsing, or gone): drop the stale entry.
      redis.call('ZREM', due_key(task), id)
      if status == 'running' then redis.call('ZADD', LEASES, f[5], id) end
    end
  end
end
return out
"""

# ARGV: prefix, worker id, lease seconds, job ids... Returns the ids to stop.
_HEARTBEAT = """
local worker = ARGV[2]
local lease_at = string.format('%.6f', tonumber(clock()) + tonumber(ARGV[3]))
local stop = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'cancel_requested', 'task')
  if f[1] ~= 'running' or f[2] ~= worker then
    stop[#stop + 1] = id
  else
    redis.call('HSET', key, 'lease_expires_at', lease_at)
    redis.call('ZADD', LEASES, lease_at, id)
    redis.call('ZREM', due_key(f[4]), id)
    if f[3] == '1' then stop[#stop + 1] = id end
  end
end
return stop
"""

# ARGV: prefix, then per outcome: worker id, job id, kind, result JSON or '', error JSON or '',
# retry_at or ''.
_FINISH = """
local nows = clock()
for i = 2, #ARGV, 6 do
  local worker, id, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'task', 'unique_key')
  if f[1] == 'running' and f[2] == worker then
    if kind == 'retry' then
      local run_at = ARGV[i + 5]
      if run_at == '' then run_at = nows end
      redis.call('HDEL', key, 'worker_id', 'lease_expires_at', 'error')
      redis.call('HSET', key, 'status', 'scheduled', 'run_at', run_at, 'updated_at', nows)
      redis.call('HINCRBY', key, 'failures', 1)
      if ARGV[i + 4] ~= '' then redis.call('HSET', key, 'error', ARGV[i + 4]) end
      redis.call('ZREM', LEASES, id)
      redis.call('ZADD', due_key(f[3]), run_at, id)
      move(id, 'running', 'scheduled')
    else
      finish(id, f[3], 'running', f[4], kind, nows, ARGV[i + 3], ARGV[i + 4])
    end
  end
end
return 0
"""

# ARGV: prefix, worker id, job ids...
_RELEASE = """
local worker = ARGV[2]
local nows = clock()
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'attempt', 'task')
  if f[1] == 'running' and f[2] == worker then
    local attempt = math.max(0, tonumber(f[3]) - 1)
    redis.call('HDEL', key, 'worker_id', 'lease_expires_at')
    redis.call('HSET', key, 'status', 'queued', 'attempt', tostring(attempt), 'run_at', nows,
      'updated_at', nows)
    redis.call('ZREM', LEASES, id)
    redis.call('ZADD', due_key(f[4]), nows, id)
    move(id, 'running', 'queued')
  end
end
return 0
"""

# ARGV: prefix, worker id, job id, progress JSON.
_PROGRESS = """
local key = job_key(ARGV[3])
local f = redis.call('HMGET', key, 'status', 'worker_id')
if f[1] == 'running' and f[2] == ARGV[2] then
  redis.call('HSET', key, 'progress', ARGV[4], 'updated_at', clock())
end
return 0
"""

# ARGV: prefix, job id. Returns the job's row after the change, or nil.
_CANCEL = """
local id = ARGV[2]
local key = job_key(id)
local f = redis.call('HMGET', key, 'status', 'task', 'unique_key')
local status = f[1]
if not status then return false end
if status == 'queued' or status == 'scheduled' then
  finish(id, f[2], status, f[3], 'cancelled', clock(), '', '')
elseif status == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1', 'updated_at', clock())
end
return row(id)
"""

# ARGV: prefix, how many, upper bound ('+' or '(' .. cursor), statuses...
# Returns the rows of up to `how many` jobs, newest id first.
_LIST = """
local n, upper = tonumber(ARGV[2]), ARGV[3]
local lists, heads = {}, {}
for s = 4, #ARGV do
  lists[#lists + 1] = redis.call('ZREVRANGEBYLEX', status_key(ARGV[s]), upper, '-', 'LIMIT', 0, n)
  heads[#heads + 1] = 1
end
local out = {}
while #out < n do
  -- Each status's ids come newest first: merge them, taking the largest head each time.
  local best, best_id = nil, nil
  for k = 1, #lists do
    local id = lists[k][heads[k]]
    if id and (best_id == nil or str_less(best_id, id)) then best, best_id = k, id end
  end
  if best == nil then break end
  heads[best] = heads[best] + 1
  local r = row(best_id)
  if r[1] then out[#out + 1] = r end
end
return out
"""

# ARGV: prefix, finished before (exclusive), keep (-1: no count limit), batch size. Deletes
# one batch of the oldest finished jobs past the age limit or past the `keep` newest, and
# returns how many it deleted.
_PURGE = """
local batch = tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', FINISHED, '-inf', '(' .. ARGV[2], 'LIMIT', 0, batch)
local keep = tonumber(ARGV[3])
if keep >= 0 and #ids < batch then
  local excess = redis.call('ZCARD', FINISHED) - keep
  if excess > #ids then
    ids = redis.call('ZRANGE', FINISHED, 0, math.min(excess, batch) - 1)
  end
end
for _, id in ipairs(ids) do
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'status', 'unique_key')
  if f[1] then redis.call('ZREM', status_key(f[1]), id) end
  free_unique(id, f[2])
  redis.call('DEL', key)
  redis.call('ZREM', FINISHED, id)
end
return #ids
"""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _script(body: str) -> str:
    constants = (
        f"local LEASE_LOST = {_lua_string(LEASE_LOST.model_dump_json())}\n"
        f"local LOST_WORKER_REDELIVERIES = {int(LOST_WORKER_REDELIVERIES)}\n"
        f"local ROW = {{{', '.join(_lua_string(name) for name in _ROW)}}}\n"
    )
    return constants + _PRELUDE + body


# ---------------------------------------------------------------------------------------------
# Encoding: Job <-> hash fields.


def _time(value: float) -> str:
    number = float(value)
    if math.isnan(number):
        raise ValueError("a job time cannot be NaN")
    return repr(number)


def _encode_job(job: Job) -> list[str]:
    """The enqueue script's arguments for one job (see `_ENQUEUE`)."""
    extra: list[str] = []
    if job.unique_key == "":  # kept as given, but dedupes on nothing
        extra += ("unique_key", "")
    if job.worker_id is not None:
        extra += ("worker_id", job.worker_id)
    if job.started_at is not None:
        extra += ("started_at", _time(job.started_at))
    if job.finished_at is not None:
        extra += ("finished_at", _time(job.finished_at))
    if job.lease_expires_at is not None:
        extra += ("lease_expires_at", _time(job.lease_expires_at))
    if job.cancel_requested:
        extra += ("cancel_requested", "1")
    if job.result is not None:
        extra += ("result", _json(job.result))
    if job.error is not None:
        extra += ("error", job.error.model_dump_json())
    if job.progress is not None:
        extra += ("progress", job.progress.model_dump_json())
    spec = {
        "id": job.id,
        "args": job.args,
        "timeout": job.timeout,
        "backoff": job.backoff,
        "created_at": job.created_at,
        "request_id": job.request_id,
        "trace_context": job.trace_context,
    }
    return [
        job.id,
        job.task,
        job.status,
        _time(job.run_at),
        _time(job.updated_at),
        str(job.attempt),
        str(job.max_retries),
        _json(spec),
        job.unique_key or "",
        str(len(extra)),
        *extra,
    ]


def _json(value: Any) -> str:
    """JSON the way pydantic writes a job's `Any` fields (datetimes, models... included)."""
    return to_json(value).decode()


def _encode_outcome(worker_id: str, outcome: Outcome) -> tuple[str, ...]:
    """The finish script's six arguments for one outcome (see `_FINISH`)."""
    if outcome.kind not in ("succeeded", "failed", "cancelled", "retry"):
        raise ValueError(f"unknown outcome kind {outcome.kind!r}")
    return (
        worker_id,
        outcome.job_id,
        outcome.kind,
        "" if outcome.result is None else _json(outcome.result),
        "" if outcome.error is None else outcome.error.model_dump_json(),
        "" if outcome.retry_at is None else _time(outcome.retry_at),
    )


def _decode(row: Sequence[str | None]) -> Job:
    """A job from its `_ROW` fields (pydantic turns the numbers' text into numbers)."""
    (
        spec,
        task,
        max_retries,
        status,
        attempt,
        run_at,
        updated_at,
        unique_key,
        worker_id,
        started_at,
        finished_at,
        lease_expires_at,
        cancel_requested,
        result,
        error,
        progress,
        failures,
    ) = row
    if spec is None:
        raise ValueError("not a job")
    data: dict[str, Any] = json.loads(spec)
    data["task"] = task
    data["max_retries"] = max_retries
    data["status"] = status
    data["attempt"] = attempt
    data["failures"] = failures or 0
    data["run_at"] = run_at
    data["updated_at"] = updated_at
    data["unique_key"] = unique_key
    data["worker_id"] = worker_id
    data["started_at"] = started_at
    data["finished_at"] = finished_at
    data["lease_expires_at"] = lease_expires_at
    data["cancel_requested"] = cancel_requested == "1"
    if result is not None:
        data["result"] = json.loads(result)
    if error is not None:
        data["error"] = json.loads(error)
    if progress is not None:
        data["progress"] = json.loads(progress)
    return Job.model_validate(data)


# ---------------------------------------------------------------------------------------------
# Group commit (steadyloop._coalesce).


class _Coalescer(Coalescer[_T, _R]):
    """The store's group commit: its errors name the Redis job store."""

    subject = "the Redis job store"


# ---------------------------------------------------------------------------------------------


class _Open:
    """What exists while the store is open."""

    def __init__(self, store: RedisJobStore, options: dict[str, Any]) -> None:
        self.client = async_redis(store.url, max_connections=store.max_connections, **options)
        self.sync = sync_redis(store.url, max_connections=store.max_connections, **options)
        # Each coalescer flushes one batch at a time, so each holds one connection and sends
        # its script call pre-encoded, skipping the blocking pool's checkout (see
        # redis_pinned). A worker claims from one task: claims get one too.
        self.enqueue = PinnedScript(self.client, self.client.register_script(_script(_ENQUEUE)))
        self.claim = PinnedScript(self.client, self.client.register_script(_script(_CLAIM)))
        self.finish = PinnedScript(self.client, self.client.register_script(_script(_FINISH)))
        self.release = self.client.register_script(_script(_RELEASE))
        self.progress = self.client.register_script(_script(_PROGRESS))
        self.cancel = self.client.register_script(_script(_CANCEL))
        self.list = self.client.register_script(_script(_LIST))
        self.purge = self.client.register_script(_script(_PURGE))
        self.heartbeat: Script = self.sync.register_script(_script(_HEARTBEAT))
        self.enqueuer: _Coalescer[tuple[Job, list[str]], Job] = _Coalescer(
            store._flush_enqueue, store.max_batch
        )
        self.finisher: _Coalescer[tuple[str, ...], None] = _Coalescer(
            store._flush_finish, store.max_batch
        )


async def _run(script: AsyncScript, args: Sequence[str]) -> Any:
    return await script(args=args)


class RedisJobStore:
    """Jobs in Redis (see the module docstring for the data model and guarantees).

    `options` go to both redis-py connection pools (for example `password`,
    `health_check_interval`, `ssl_ca_certs`). `max_batch` caps how many jobs or outcomes
    concurrent callers share one round trip with; `reap_batch` how many lapsed leases one
    claim moves back to the due sets; `purge_batch` how many jobs one purge round trip deletes.
    `close_timeout` bounds how long `close` waits for coalesced writes still in flight.
    Between `open` and `close` the store serves one event loop (plus `heartbeat` from any
    thread).
    """

    #: What a call raises when Redis cannot be reached: `Jobs` answers those with
    #: `JobStoreUnavailable` (503 + Retry-After) instead of a 500.
    unreachable_errors: tuple[type[BaseException], ...] = (
        RedisConnectionError,
        RedisTimeoutError,
    )

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "steadyloop",
        max_connections: int = 50,
        socket_timeout: float | None = 30.0,
        socket_connect_timeout: float | None = 5.0,
        max_batch: int = 1000,
        reap_batch: int = 1000,
        purge_batch: int = 500,
        close_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_connections = max_connections
        self.max_batch = max_batch
        self.reap_batch = max(1, reap_batch)
        self.purge_batch = max(1, purge_batch)
        self.close_timeout = close_timeout
        self._options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            **options,
        }
        self._open: _Open | None = None

    def _state(self) -> _Open:
        state = self._open
        if state is None:
            raise RuntimeError("the Redis job store is not open")
        return state

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    async def open(self) -> None:
        """Create the clients; connections are made on first use."""
        if self._open is None:
            self._open = _Open(self, self._options)

    async def close(self) -> None:
        """Let coalesced writes in flight finish (up to `close_timeout`), then disconnect."""
        state = self._open
        if state is None:
            return
        await asyncio.gather(
            state.enqueuer.aclose(self.close_timeout), state.finisher.aclose(self.close_timeout)
        )
        self._open = None
        try:
            for pinned in (state.enqueue, state.claim, state.finish):
                await pinned.aclose()
            await state.client.connection_pool.disconnect()
        finally:
            state.sync.connection_pool.disconnect()

    async def ping(self) -> bool:
        return bool(await cast(Awaitable[Any], self._state().client.ping()))

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        state = self._state()
        return await state.enqueuer.submit([(job, _encode_job(job)) for job in jobs])

    async def _flush_enqueue(self, batch: list[tuple[Job, list[str]]]) -> list[Job]:
        state = self._state()
        args = [self.prefix]
        for _, encoded in batch:
            args += encoded
        replies: list[Any] = await state.enqueue(args)
        return [
            job.model_copy() if reply == 0 else _decode(reply)
            for (job, _), reply in zip(batch, replies, strict=True)
        ]

    async def claim(
        self, worker_id: str, tasks: Collection[str], limit: int, lease: float
    ) -> list[Job]:
        wanted = list(dict.fromkeys(tasks))
        if not wanted or limit < 1:
            return []
        args = [self.prefix, worker_id, str(limit), _time(lease), str(self.reap_batch), *wanted]
        replies: list[Any] = await self._state().claim(args)
        return [_decode(reply) for reply in replies]

    def heartbeat(self, worker_id: str, job_ids: Collection[str], lease: float) -> list[str]:
        ids = list(job_ids)
        if not ids:
            return []
        stop: list[str] = self._state().heartbeat(args=[self.prefix, worker_id, _time(lease), *ids])
        return list(stop)

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> None:
        state = self._state()
        await state.finisher.submit([_encode_outcome(worker_id, o) for o in outcomes])

    async def _flush_finish(self, batch: list[tuple[str, ...]]) -> list[None]:
        args = [self.prefix]
        for encoded in batch:
            args += encoded
        await self._state().finish(args)
        return [None] * len(batch)

    async def release(self, worker_id: str, job_ids: Collection[str]) -> None:
        ids = list(job_ids)
        if ids:
            await _run(self._state().release, [self.prefix, worker_id, *ids])

    async def set_progress(self, worker_id: str, job_id: str, progress: JobProgress) -> None:
        args = [self.prefix, worker_id, job_id, progress.model_dump_json()]
        await _run(self._state().progress, args)

    async def get(self, job_id: str) -> Job | None:
        client = self._state().client
        row: list[str | None] = await cast(
            Awaitable[list[str | None]], client.hmget(self._key("job", job_id), list(_ROW))
        )
        return _decode(row) if row[0] is not None else None

    async def list(self, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        limit = max(0, limit)
        statuses = _ALL_STATUSES if status is None else (status.value,)
        upper = "+" if cursor is None else f"({cursor}"
        args = [self.prefix, str(limit + 1), upper, *statuses]
        replies: list[Any] = await _run(self._state().list, args)
        page = [_decode(reply) for reply in replies]
        items = page[:limit]
        more = len(page) > limit
        return JobPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def cancel(self, job_id: str) -> Job | None:
        reply: list[str | None] | None = await _run(self._state().cancel, [self.prefix, job_id])
        return _decode(reply) if reply else None

    async def claim_slot(self, key: str, ttl: float) -> bool:
        client = self._state().client
        name = self._key("slot", key)
        if ttl <= 0:  # expires at once: taken only if an earlier claim still holds it
            return not await cast(Awaitable[Any], client.exists(name))
        millis = max(1, math.ceil(ttl * 1000))
        return bool(await cast(Awaitable[Any], client.set(name, "1", nx=True, px=millis)))

    async def purge(self, finished_before: float, keep: int | None = None) -> int:
        state = self._state()
        limit = "-1" if keep is None else str(max(0, keep))
        args = [self.prefix, _time(finished_before), limit, str(self.purge_batch)]
        total = 0
        while True:
            deleted = int(await _run(state.purge, args))
            total += deleted
            if deleted < self.purge_batch:
                return total

    async def counts(self) -> dict[JobStatus, int]:
        client = self._state().client
        async with client.pipeline(transaction=True) as pipe:
            for status in JobStatus:
                pipe.zcard(self._key("status", status.value))
            sizes: list[int] = await pipe.execute()
        return dict(zip(JobStatus, sizes, strict=True))
