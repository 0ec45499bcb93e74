"""Alembic environment for the run log; configured from code (no alembic.ini)."""
