"""mediahub's settings: every library setting, the demo's own, and the demo's defaults.

The demo is an application of the library, so its knobs live here, not in `Settings`: the
`DEMO_*` fields, and a camera domain on two dedicated threads (its capture handle is
thread-affine). The demo page of the docs lists them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from steadyloop.settings import Settings

__all__ = ["DemoSettings"]


class DemoSettings(Settings):
    """`Settings` plus the demo's fields; read from the same environment and `.env` file."""

    blocking_dedicated_domains: str = Field(
        default="camera:2",
        description="Domains that run on their own named threads, as name:threads pairs "
        "separated by commas; the demo's camera handle is thread-affine, so it gets two.",
    )
    demo_cleanup_every: float = Field(
        default=300.0, gt=0, description="Seconds between the demo's periodic cleanup runs."
    )
    demo_data_dir: Path = Field(
        default=Path("./data"), description="Where the demo app keeps its files and database."
    )


def demo_settings(settings: Settings | None) -> DemoSettings:
    """`settings` as demo settings: the values it was given explicitly over the environment."""
    if isinstance(settings, DemoSettings):
        return settings
    if settings is None:
        return DemoSettings()
    return DemoSettings(**{name: getattr(settings, name) for name in settings.model_fields_set})
