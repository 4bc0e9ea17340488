"""mediahub, the reference app: every part of steadyloop used the way the seeds use it."""

from steadyloop.demo.app import create_app

__all__ = ["create_app"]
