"""The forge spatial index in a SQL database, for planners that should not list and read a
million `.spatial` and `.frags` files: label -> (forge task, bounding box, fragment byte range).

SQLite through the standard library by default (`sqlite:///path`, or a bare path); MySQL
(`mysql://user:pass@host/db`, needs pymysql) and PostgreSQL (`postgresql://...`, needs psycopg
or psycopg2) when the URL says so. Only planners use it; workers never see the database.
"""
from __future__ import annotations

import os
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from igneous_like.errors import UserError

U64 = 1 << 64
TABLES = [
    """CREATE TABLE IF NOT EXISTS spatial_tasks (
         id BIGINT NOT NULL, dir VARCHAR(1024) NOT NULL, name VARCHAR(255) NOT NULL, PRIMARY KEY (id))""",
    """CREATE TABLE IF NOT EXISTS spatial_objects (
         task_id BIGINT NOT NULL, label BIGINT NOT NULL,
         x0 BIGINT, y0 BIGINT, z0 BIGINT, x1 BIGINT, y1 BIGINT, z1 BIGINT,
         frag_start BIGINT, frag_end BIGINT, PRIMARY KEY (task_id, label))""",
    "CREATE INDEX spatial_objects_label ON spatial_objects (label)",
]


def to_sql(label: int) -> int:
    """uint64 label -> signed BIGINT (the same 64 bits): SQL integers are signed."""
    return label - U64 if label >= 1 << 63 else label


def from_sql(value: int) -> int:
    return value + U64 if value < 0 else value


@dataclass
class SpatialDB:
    """An open DB-API connection and its parameter marker."""

    conn: Any
    marker: str
    kind: str

    def execute(self, sql: str, params: Iterable = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", self.marker), tuple(params))
        return cur

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            cur = self.conn.cursor()
            cur.executemany(sql.replace("?", self.marker), rows)

    def close(self) -> None:
        self.conn.close()


def connect(url: str) -> SpatialDB:
    """Open a database by URL; a one-line error for unknown schemes, missing drivers and
    servers that refuse the connection (the password is not repeated in it)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower() if "://" in url else "sqlite"
    if scheme == "sqlite":
        import sqlite3

        path = unquote(parts.path) if "://" in url else url
        if not path or path == "/":
            raise UserError(f"database URL {url!r} names no file: use sqlite:///path/to/index.db")
        if os.path.dirname(path) and not os.path.isdir(os.path.dirname(path)):
            raise UserError(f"cannot create {path}: directory {os.path.dirname(path)} does not exist")
        return SpatialDB(sqlite3.connect(path), "?", "sqlite")
    if scheme in ("mysql", "mysql+pymysql"):
        driver = _driver("pymysql", "MySQL", "pip install pymysql")
        if not parts.path.strip("/"):
            raise UserError(f"MySQL URL {_safe(url)!r} names no database: use mysql://user:pass@host:port/DB")
        conn = _open(url, lambda: driver.connect(
            host=parts.hostname or "localhost", port=parts.port or 3306, user=unquote(parts.username or ""),
            password=unquote(parts.password or ""), database=unquote(parts.path.strip("/"))))
        return SpatialDB(conn, "%s", "mysql")
    if scheme in ("postgres", "postgresql"):
        try:
            driver = _driver("psycopg", "PostgreSQL", "pip install psycopg")
        except UserError:
            driver = _driver("psycopg2", "PostgreSQL", "pip install psycopg (or psycopg2)")
        return SpatialDB(_open(url, lambda: driver.connect(url)), "%s", "postgresql")
    raise UserError(f"unknown database scheme {scheme!r} in {url!r}: use sqlite:///PATH, mysql://... or postgresql://...")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _open(url: str, opener):
    try:
        return opener()
    except Exception as exc:  # refused, unknown host, bad credentials, no such database
        raise UserError(f"cannot connect to {_safe(url)}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def _driver(module: str, name: str, hint: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{name} URLs need the {module} driver, which is not installed: {hint}") from None


# MySQL compares and sorts strings case-insensitively by default: two layer directories that
# differ only in case would share (and replace) each other's rows. Binary collation keeps them apart.
MYSQL_TABLE_OPTIONS = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"


def create_tables(db: SpatialDB) -> None:
    """Tables and index, each committed alone: a failed statement rolls back only itself."""
    for sql in TABLES:
        if db.kind == "mysql" and sql.startswith("CREATE TABLE"):
            sql += MYSQL_TABLE_OPTIONS
        try:
            db.execute(sql)
            db.conn.commit()
        except Exception:  # the index exists already (MySQL has no CREATE INDEX IF NOT EXISTS)
            db.conn.rollback()


def store(db: SpatialDB, directory: str, tasks: dict[str, dict[int, tuple]]) -> int:
    """Replace `directory`'s rows with tasks: name -> {label: (bbox or None, range or None)}.
    Returns the number of (label, task) rows."""
    create_tables(db)
    db.execute("DELETE FROM spatial_objects WHERE task_id IN (SELECT id FROM spatial_tasks WHERE dir = ?)",
               (directory,))
    db.execute("DELETE FROM spatial_tasks WHERE dir = ?", (directory,))
    start = (db.execute("SELECT MAX(id) FROM spatial_tasks").fetchone()[0] or 0) + 1
    rows = 0
    for task_id, name in enumerate(sorted(tasks), start):
        db.execute("INSERT INTO spatial_tasks (id, dir, name) VALUES (?, ?, ?)", (task_id, directory, name))
        objects = [(task_id, to_sql(label), *(bbox or [None] * 6), *(span or [None, None]))
                   for label, (bbox, span) in sorted(tasks[name].items())]
        db.executemany("INSERT INTO spatial_objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", objects)
        rows += len(objects)
    db.conn.commit()
    return rows


def _rows(db: SpatialDB, directory: str) -> Iterator[tuple]:
    """(label, task, start, end) by task name, then label: sorted here, since a server's
    collation (PostgreSQL's locale, MySQL's case folding) may order names differently."""
    sql = ("SELECT o.label, t.name, o.frag_start, o.frag_end FROM spatial_objects o "
           "JOIN spatial_tasks t ON o.task_id = t.id WHERE t.dir = ?")
    yield from sorted(db.execute(sql, (directory,)).fetchall(), key=lambda row: (row[1], row[0]))


def owners(url: str, directory: str, mode: str) -> dict[int, list]:
    """label -> the forge tasks holding its fragments (mode 'files'), or label -> [[task, start,
    end], ...] byte ranges in .frags files (mode 'frags'): what the merge planners otherwise
    read from the files themselves, in the same order (tasks by name)."""
    found: dict[int, list] = {}
    with closing(connect(url)) as db:
        if not _has_tables(db):
            raise UserError(f"{url} holds no spatial index: run `spatial-index db` first")
        for label, task, start, end in _rows(db, directory):
            label = from_sql(label)
            if mode == "frags":
                if start is None:
                    raise UserError(f"{url} has no fragment byte ranges for {directory}: reload it with `spatial-index db`")
                found.setdefault(label, []).append([task, int(start), int(end)])
            else:
                found.setdefault(label, []).append(task)
    if not found:
        raise UserError(f"{url} has no spatial index rows for {directory}: run `spatial-index db` on it first")
    return found


def label_bounds(url: str, directory: str) -> dict[int, list[int]]:
    """label -> its bounding box over all forge tasks (physical units)."""
    sql = ("SELECT o.label, MIN(o.x0), MIN(o.y0), MIN(o.z0), MAX(o.x1), MAX(o.y1), MAX(o.z1) FROM spatial_objects o "
           "JOIN spatial_tasks t ON o.task_id = t.id WHERE t.dir = ? AND o.x0 IS NOT NULL GROUP BY o.label")
    with closing(connect(url)) as db:
        return {from_sql(r[0]): [int(v) for v in r[1:]] for r in db.execute(sql, (directory,)).fetchall()}


def _has_tables(db: SpatialDB) -> bool:
    try:
        db.execute("SELECT COUNT(*) FROM spatial_tasks").fetchone()
        return True
    except Exception:
        return False
