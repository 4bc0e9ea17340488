"""Each component owns a frozen config with its defaults; `Settings` only reads the environment.

The defaults of a component are written once, in its config class: the `Settings` fields take
theirs from there, so `Settings()` on an empty environment builds exactly the default configs.
And no component imports `steadyloop.settings`: only the wiring layer does.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import steadyloop as sl
from steadyloop.cache import Cache, CacheConfig
from steadyloop.db.pragmas import SqlitePragmas
from steadyloop.db.sqlite import DatabaseConfig
from steadyloop.fleet import FleetConfig
from steadyloop.health import HealthConfig
from steadyloop.jobs.manager import JobsConfig
from steadyloop.limits import (
    ClientIdentityConfig,
    ConcurrencyConfig,
    ConcurrencyLimits,
    RateLimitConfig,
    RateLimits,
)
from steadyloop.logs import LoggingConfig
from steadyloop.loopwatch import LoopWatch, LoopWatchConfig
from steadyloop.offload import Bulkheads, BulkheadsConfig
from steadyloop.server import ServerLimits
from steadyloop.settings import Settings
from steadyloop.web.request_limits import RequestLimits

PACKAGE = Path(sl.__file__).parent

#: The wiring layer: the modules that read the environment and hand components their configs.
WIRING = {
    # Reads the environment; builds every component's config.
    "settings.py",
    # Builds the components from those configs (`Runtime(settings)`).
    "runtime.py",
    # `install(app, settings=None)`: the one call an app makes; it reads the env when given none.
    "web/install.py",
    # The command line reads the environment to run servers, the demo and checks.
    "cli.py",
    # The package re-exports `Settings` as public API.
    "__init__.py",
    # The server's per-connection limits are read once per process before any runtime exists
    # (uvicorn builds its protocol objects from them).
    "server.py",
    # `create_engine(url, settings=None)` is public API: called bare, it reads the environment,
    # like `install(app)` does.
    "db/engine.py",
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return found


def test_only_the_wiring_layer_imports_settings() -> None:
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("demo/"):  # the reference app is an application: it wires itself
            continue
        if "steadyloop.settings" in imports_of(path):
            importers.add(name)
    assert importers - WIRING == set(), "components take their config object, not Settings"


def test_settings_defaults_are_the_component_configs_defaults() -> None:
    settings = Settings(log_setup=False)
    assert settings.concurrency_config() == ConcurrencyConfig()
    assert settings.rate_limit_config() == RateLimitConfig()
    assert settings.client_identity_config() == ClientIdentityConfig()
    assert settings.cache_config() == CacheConfig()
    assert settings.database_config() == DatabaseConfig()
    assert settings.sqlite_pragmas() == SqlitePragmas()
    assert settings.jobs_config() == JobsConfig()
    assert settings.logging_config() == LoggingConfig()
    assert settings.loop_watch_config() == LoopWatchConfig()
    assert settings.health_config() == HealthConfig()
    assert settings.fleet_config() == FleetConfig()
    assert settings.request_limits() == RequestLimits()
    assert settings.server_limits() == ServerLimits()
    # The one addition: sync job tasks get a `jobs` bulkhead as wide as the job concurrency.
    jobs_bulkhead = {"jobs": JobsConfig().concurrency}
    assert settings.bulkheads_config() == BulkheadsConfig(limits=jobs_bulkhead)


def test_configs_are_frozen() -> None:
    for config in (BulkheadsConfig(), ConcurrencyConfig(), RateLimitConfig(), CacheConfig()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.__setattr__(dataclasses.fields(config)[0].name, None)


async def test_components_are_built_from_their_configs_alone() -> None:
    limits = ConcurrencyLimits.from_config(ConcurrencyConfig(max_concurrent=3, exempt=("/x",)))
    global_limiter = limits.get("global")
    assert global_limiter is not None
    assert global_limiter.limit == 3
    assert limits.for_path("/x") == []
    rates = RateLimits.from_config(RateLimitConfig(default="5/minute"), exempt=["/health"])
    assert rates.rule_for("/health") is None
    assert rates.rule_for("/any") is not None
    cache = Cache.from_config(CacheConfig(lock_wait=1.5), name="configs")
    assert cache.lock_wait == 1.5
    heads = Bulkheads.from_config(BulkheadsConfig(dedicated={"camera": 2}))
    try:
        assert heads.get("camera").statistics().dedicated
    finally:
        heads.shutdown()
    watch = LoopWatch.from_config(LoopWatchConfig(threshold=0.2, full_stack=True))
    assert (watch.threshold, watch.collapse_frameworks) == (0.2, False)
