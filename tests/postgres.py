"""A PostgreSQL database of a test's own on the loopback server (``.ci/run`` starts it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Create a database named ``<prefix>_<random>``, yield its SQLAlchemy/psycopg2 URL, and drop it
    afterwards (connections still open are closed by the drop)."""
    import psycopg2

    database = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **SERVER)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    try:
        yield f"postgresql://{SERVER['user']}@{SERVER['host']}:{SERVER['port']}/{database}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
