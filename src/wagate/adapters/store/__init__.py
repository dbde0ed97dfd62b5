"""Storage: SQLAlchemy Core on SQLite and PostgreSQL, Alembic migrations."""
