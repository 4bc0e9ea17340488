"""Rendering the JSON access line: steadyloop's template against the fast JSON encoders.

In-process, no server: what it costs the log writer thread to turn one request's queued fields
(the tuple the request middleware queues) into the JSON access line. Four renderers, each
making the same fields from the same tuples:

- steadyloop template: `logs._json_access_line`, what the writer runs (the very bytes
  `JsonFormatter` writes for the access record);
- JsonFormatter via the record: the access record built and formatted the standard way
  (what any other sink gets);
- orjson: the fields put in a dict (the timestamp and the message built as the template builds
  them) and `orjson.dumps`;
- msgspec: the same dict and `msgspec.json.Encoder().encode`.

The encoders write compact JSON (no spaces after `:` and `,`), so their lines are shorter than
the template's; every line of every renderer is parsed back and compared field by field with
the template's before anything is timed.

15 interleaved rounds (order rotating); in each, every renderer renders the same 20,000 tuples
(distinct paths, durations and ids) after 2,000 warm-up lines; the figure is the median over
the rounds of CPU time per line (`time.process_time_ns`).

Target (the rule for picking the writer's renderer): the template costs at most 1.25x the
cheapest renderer measured. An encoder must save more than a fifth of the rendering to be
worth what it brings with it: a runtime dependency, and access lines in other bytes (compact
JSON) than every other JSON record of the same log stream.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import common

NAME = "access_line"
TITLE = "Access line: rendering one request's JSON line from its queued fields"

ROUNDS = 15
LINES = 20_000
WARMUP = 2_000
ROLE = "api"
#: The most the template may cost, as a multiple of the cheapest renderer.
TARGET_RATIO = 1.25

Renderer = Callable[[tuple[Any, ...]], str | bytes]


def _fields() -> list[tuple[Any, ...]]:
    """What the request middleware queues: created, level, request id, method, raw path,
    route, status, duration (s), client (host, port)."""
    rng = random.Random(7)
    now = time.time()
    return [
        (
            now + i * 0.0001,
            20,
            f"{rng.getrandbits(128):032x}",
            rng.choice(("GET", "POST", "GET", "GET")),
            f"/api/items/{rng.randrange(10**6)}".encode("latin-1"),
            "/api/items/{item_id}",
            rng.choice((200, 200, 201, 404)),
            rng.uniform(0.00005, 0.5),
            ("10.0.0.1", rng.randrange(1024, 65536)),
        )
        for i in range(LINES)
    ]


def _renderers() -> dict[str, Renderer]:
    import msgspec
    import orjson

    from steadyloop import logs

    template = logs._json_access_line
    formatter = logs.JsonFormatter()

    def steadyloop_template(item: tuple[Any, ...]) -> str:
        return template(*item, ROLE)

    def via_record(item: tuple[Any, ...]) -> str:
        entry = logs.AccessEntry._make(logs._access_strings(item))
        return formatter.format(entry.record(ROLE))

    def as_dict(item: tuple[Any, ...]) -> dict[str, Any]:
        created, _level, request_id, method, raw_path, route, status, duration, client = item
        path = raw_path.decode("latin-1")
        ms = duration * 1000
        second = int(created)
        if logs._last_second[0] != second:
            logs._timestamp(created)
        return {
            "ts": logs._last_second[1] + logs._MILLIS[int((created - second) * 1000)],
            "level": "INFO",
            "logger": logs.ACCESS_LOGGER,
            "message": f"{method} {path} {status} {ms:.1f}ms",
            "request_id": request_id,
            "role": ROLE,
            "method": method,
            "path": path,
            "route": route,
            "status_code": status,
            "duration_ms": round(ms, 2),
            "client": f"{client[0]}:{client[1]}",
        }

    encode = msgspec.json.Encoder().encode
    dumps = orjson.dumps

    def with_orjson(item: tuple[Any, ...]) -> bytes:
        return dumps(as_dict(item))

    def with_msgspec(item: tuple[Any, ...]) -> bytes:
        return encode(as_dict(item))

    return {
        "steadyloop template (the writer's)": steadyloop_template,
        "JsonFormatter via the record": via_record,
        "orjson (dict + dumps)": with_orjson,
        "msgspec (dict + encode)": with_msgspec,
    }


def _check_same_fields(renderers: dict[str, Renderer], items: list[tuple[Any, ...]]) -> None:
    template = next(iter(renderers.values()))
    for item in items:
        expected = json.loads(template(item))
        for name, render in renderers.items():
            if json.loads(render(item)) != expected:
                raise AssertionError(f"{name} renders other fields than the template: {item}")


def _time(render: Renderer, items: list[tuple[Any, ...]]) -> float:
    """CPU nanoseconds per line."""
    for item in items[:WARMUP]:
        render(item)
    started = time.process_time_ns()
    for item in items:
        render(item)
    return (time.process_time_ns() - started) / len(items)


def _measure() -> dict[str, list[float]]:
    renderers = _renderers()
    items = _fields()
    _check_same_fields(renderers, items)
    names = list(renderers)
    out: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            out[name].append(_time(renderers[name], items))
    return out


def _met(medians: dict[str, float]) -> bool:
    template = next(iter(medians.values()))
    return template <= TARGET_RATIO * min(medians.values())


def report(results: dict[str, list[float]], info: dict[str, str]) -> str:
    medians = {name: statistics.median(values) for name, values in results.items()}
    template = next(iter(medians.values()))
    rows = [
        [
            name,
            f"{median:,.0f}",
            f"{min(results[name]):,.0f} – {max(results[name]):,.0f}",
            common.fmt_ratio(median / template),
        ]
        for name, median in medians.items()
    ]
    cheapest = min(medians, key=lambda name: medians[name])
    met = _met(medians)
    return "\n".join(
        [
            common.md_header(TITLE, info),
            "",
            "## Method",
            "",
            __doc__.split("\n\n", 1)[1].strip(),
            "",
            "## Results",
            "",
            f"Median of {ROUNDS} rounds of {LINES:,} lines, CPU nanoseconds per line:",
            "",
            common.md_table(
                ["renderer", "ns per line", "range over rounds", "vs the template"], rows
            ),
            "",
            "## Target",
            "",
            f"The template costs {template / medians[cheapest]:.2f}x the cheapest renderer "
            f"({cheapest}; target ≤ {TARGET_RATIO:.2f}x): **{'met' if met else 'NOT met'}**.",
            "",
            f"Chart: `{NAME}.png`.",
        ]
    )


def chart(results: dict[str, list[float]]) -> None:
    plt = common.pyplot()
    names = list(results)
    medians = [statistics.median(results[name]) for name in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(range(len(names)), medians, color=["#2b7", "#888", "#c84", "#48c"])
    common.label_bars(ax, bars, medians, lambda v: f"{v:,.0f} ns")
    ax.set_xticks(range(len(names)), [name.split(" (")[0] for name in names], fontsize=8)
    ax.set_ylabel("CPU ns per line (median of rounds)")
    ax.set_title("Rendering one JSON access line from its queued fields")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME), dpi=110)
    plt.close(fig)


def run() -> bool:
    info = common.machine_info()
    started = time.monotonic()
    results = _measure()
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    path = common.write_result(NAME, report(results, info))
    chart(results)
    met = _met({name: statistics.median(values) for name, values in results.items()})
    print(
        f"[{NAME}] target (the template at most {TARGET_RATIO:.2f}x the cheapest): "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
