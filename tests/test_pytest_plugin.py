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
