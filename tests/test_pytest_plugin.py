from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)

INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


def test_plugin_fails_a_test_that_blocks_the_loop(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    path = pytester.makepyfile(
        test_blocking="""
        import asyncio
        import time

        import pytest


        async def fetch_listing():
            time.sleep(1.0)  # requests.get(...) in disguise


        @pytest.mark.loop_stall(threshold_ms=50)
        async def test_listing():
            await fetch_listing()


        @pytest.mark.loop_stall(threshold_ms=50)
        async def test_well_behaved():
            await asyncio.sleep(0.05)


        async def test_not_watched():
            time.sleep(0.2)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*event loop stalled for more than 50 ms, blocked in fetch_listing at "
            f"*test_blocking.py:{_line_of(path, 'time.sleep(1.0)')}",
            "*time.sleep(1.0)*",
        ]
    )


def test_command_line_option_watches_every_async_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    path = pytester.makepyfile(
        test_option="""
        import time


        async def test_sleepy():
            time.sleep(1.0)


        def test_sync_is_untouched():
            time.sleep(0.01)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--loop-stall-ms=50")
    result.assert_outcomes(passed=1, failed=1)
    line = _line_of(path, "time.sleep(1.0)")
    result.stdout.fnmatch_lines([f"*blocked in test_sleepy at *test_option.py:{line}"])


def _line_of(path: object, text: str) -> int:
    lines = str(__import__("pathlib").Path(str(path)).read_text()).splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_forbid_blocking_fails_a_short_sleep_and_passes_offloaded_work(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    path = pytester.makepyfile(
        test_guarded="""
        import asyncio
        import time

        import pytest

        import steadyloop as sl
        from steadyloop.offload import current_bulkheads


        @pytest.fixture(autouse=True)
        def bulkheads():
            # An app builds its bulkheads at start-up (install() / Runtime.start); the
            # first call otherwise reads the settings, which is file I/O on the loop.
            current_bulkheads()


        @pytest.mark.forbid_blocking
        async def test_sleeps_on_the_loop():
            time.sleep(0.001)


        @pytest.mark.forbid_blocking
        async def test_offloaded():
            await sl.run_blocking("fs", time.sleep, 0.001)
            await asyncio.to_thread(time.sleep, 0.001)
            await asyncio.sleep(0)


        @pytest.mark.forbid_blocking
        async def test_swallowed():
            try:
                time.sleep(0.001)
            except Exception:
                pass


        async def test_not_guarded():
            time.sleep(0.001)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    line = _line_of(path, "    time.sleep(0.001)")
    result.stdout.fnmatch_lines(
        [
            "*blocking call to time.sleep on the event loop thread at "
            f"*test_guarded.py:{line} in test_sleeps_on_the_loop",
        ]
    )
    result.stdout.fnmatch_lines(["*FAILED*test_swallowed*"])


def test_forbid_blocking_option_guards_every_async_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_option_guard="""
        import os


        async def test_stat(tmp_path):
            os.listdir(tmp_path)


        def test_sync_is_untouched(tmp_path):
            os.listdir(tmp_path)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--forbid-blocking")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*blocking call to os.listdir on the event loop thread*"])
