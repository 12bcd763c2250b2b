"""pytest-pgrestore: restore drills for PostgreSQL backups as pytest tests."""

__version__ = "0.1.0"
