"""`python -m bench [--only NAME]`: run every scenario, or just one."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

#: Scenario name -> module in this package (each exposes `run() -> bool`).
SCENARIOS = {
    "responsiveness": "bench.responsiveness",
    "offload_overhead": "bench.offload_overhead",
    "logging_hot_path": "bench.logging_hot_path",
    "access_line": "bench.access_line",
    "middleware_overhead": "bench.middleware_overhead",
    "sqlite_writers": "bench.sqlite_writers",
    "overload": "bench.overload",
    "cache": "bench.cache",
    "http_client": "bench.http_client",
    "audit": "bench.audit",
    "jobs": "bench.jobs",
    "growth": "bench.growth",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run steadyloop's benchmarks; results go to bench/results/<scenario>.md "
        "and .png.",
    )
    parser.add_argument(
        "--only", choices=sorted(SCENARIOS), metavar="NAME", help="run only this scenario"
    )
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(SCENARIOS)
    verdicts: dict[str, bool] = {}
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        verdicts[name] = importlib.import_module(SCENARIOS[name]).run()
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
    print()
    for name, met in verdicts.items():
        print(f"{name}: target {'met' if met else 'NOT met'}")
    # A missed target is a result, not a crash: the exit status stays 0.
    return 0


if __name__ == "__main__":
    sys.exit(main())
