"""Pick the storage backend from a database URL."""

from __future__ import annotations

from .storage import Storage

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_storage(url: str, *, migrate: bool = True) -> Storage:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://...``.

    Migrations are applied unless ``migrate`` is false; both backends make
    that safe when several processes start at once.
    """
    storage: Storage
    if url.startswith(SQLITE_PREFIX):
        from .sqlite import SQLiteStorage

        path = url[len(SQLITE_PREFIX) :]
        if not path:
            raise ValueError(f"database URL {url!r} names no file")
        storage = SQLiteStorage(path)
    elif url.startswith(POSTGRES_PREFIXES):
        from .postgres import PostgresStorage

        storage = PostgresStorage(url)
    else:
        raise ValueError(
            f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://..."
        )
    if migrate:
        try:
            storage.migrate()
        except BaseException:
            storage.close()
            raise
    return storage
