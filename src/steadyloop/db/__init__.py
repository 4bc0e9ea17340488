"""Databases: SQLite that serves many writers, and a SQLAlchemy engine factory."""
