"""The web layer: `install(app)`, problem+json errors, health routes."""

from steadyloop.web.install import install

__all__ = ["install"]
