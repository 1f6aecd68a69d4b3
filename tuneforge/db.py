"""The server's database: one SQLAlchemy engine per URL, SQLite by default, PostgreSQL by URL (`--db`).

The jobs API (jobs/) and the request log (monitor/) keep their tables here, each declared on `TableBase` in its own
module; `connect(url)` creates what is missing. SQLite runs in WAL mode with a busy timeout, so a server, its
workers and `tuneforge monitor` can share one file across processes.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker

from tuneforge.errors import ConfigError

BUSY_TIMEOUT_S = 30  # a second process writing waits this long for the lock instead of failing at once


class TableBase(DeclarativeBase):
    """Every tuneforge table derives from this; `connect` creates the ones imported so far."""


def default_db_url() -> str:
    """`sqlite:///$TUNEFORGE_HOME/tuneforge.db`: the same file for `serve`, `jobs worker` and `monitor`."""
    from tuneforge.paths import home

    return f"sqlite:///{home() / 'tuneforge.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; survives a killed process
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps the file consistent on a crash
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def connect(url: str | None = None) -> Engine:
    """The engine for `url` (default: `default_db_url()`), with every table imported so far created
    (idempotent: a package calls it after importing its table module)."""
    engine = _engine(url or default_db_url())
    TableBase.metadata.create_all(engine)
    return engine


@functools.cache
def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as e:  # noqa: BLE001 - a bad --db URL is the user's input
        raise ConfigError(f"--db {url}: {e}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
