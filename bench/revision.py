"""Which steadyloop source a benchmark measured: the git commit, and whether src/ had changes."""

from __future__ import annotations

import subprocess

from bench import common


def source_revision() -> str:
    """`<commit>` or `<commit> + uncommitted changes in src/`; "unknown" outside a checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=common.ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src")
    except OSError:
        return "unknown"
    return f"{commit} + uncommitted changes in src/" if dirty else commit
