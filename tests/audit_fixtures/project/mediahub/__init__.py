"""A small app whose blocking calls sit one or more sync calls away from its async routes."""

from mediahub.drive import DriveManager

__all__ = ["DriveManager"]
