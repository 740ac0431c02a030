"""ProfileDB: the measurements of every profiled kernel, in one SQLite file.

One row per (kernel key, device, schedule): latency (median, standard deviation, repeats),
energy and its source, the target, the TVM version, the host and the time. A kernel that failed
to build or run is stored with its error and no latency, so a rerun does not retry it unless
asked. Rows are committed one by one, so a killed profiler loses at most the kernel in flight;
writes go through WAL and ``INSERT ... ON CONFLICT DO NOTHING`` on the unique key, so two
profilers sharing a file neither corrupt it nor duplicate rows.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CodesignError
from ..kernelspec import KernelSpec

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    kernel_key TEXT NOT NULL,
    op TEXT NOT NULL,
    attrs_json TEXT NOT NULL,
    device TEXT NOT NULL,
    target_json TEXT NOT NULL,
    schedule TEXT NOT NULL,
    latency_ms REAL,
    latency_std_ms REAL,
    repeats INTEGER,
    energy_mj REAL,
    energy_source TEXT,
    compile_s REAL,
    tvm_version TEXT,
    host TEXT NOT NULL,
    created_at REAL NOT NULL,
    error TEXT,
    UNIQUE (kernel_key, device, schedule)
);
CREATE INDEX IF NOT EXISTS measurements_device_op ON measurements (device, op);
"""


def _is_lock_error(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED (another connection holds the lock), not a bad file."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes
    message = str(exc)
    return "database is locked" in message or "database table is locked" in message


def default_db_path() -> Path:
    """``<user cache dir>/codesign/profiles.sqlite`` (override with --db or $CODESIGN_DB)."""
    import os

    env = os.environ.get("CODESIGN_DB")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("codesign")) / "profiles.sqlite"


@dataclass(frozen=True)
class Measurement:
    kernel_key: str
    device: str
    schedule: str
    latency_ms: float | None
    latency_std_ms: float | None = None
    repeats: int | None = None
    energy_mj: float | None = None
    energy_source: str | None = None
    target: dict | None = None
    compile_s: float | None = None
    tvm_version: str | None = None
    host: str = ""
    created_at: float = 0.0
    error: str | None = None

    @property
    def spec(self) -> KernelSpec:
        return KernelSpec.from_key(self.kernel_key)

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency_ms is not None

    def to_dict(self) -> dict:
        return asdict(self)


class ProfileDB:
    """A SQLite profile database. Use as a context manager or call close()."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        """Open (or create) the database at path.

        Args:
            path: the SQLite file; created with its schema if it does not exist.
            timeout_s: how long to wait for another profiler holding the file's write lock.

        Raises:
            CodesignError: the file cannot be opened, is still locked after timeout_s, is not a
                codesign profile database, or has a newer schema version.
        """
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise CodesignError(f"cannot open profile database {self.path}: {exc}") from exc
        try:
            self._enable_wal()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if _is_lock_error(exc):
                raise CodesignError(
                    f"profile database {self.path} is still locked by another process after "
                    f"{self.timeout_s:g} s; wait for it to finish or use another --db"
                ) from exc
            raise CodesignError(f"{self.path} is not a codesign profile database ({exc})") from exc
        except BaseException:
            self._conn.close()
            raise

    def _enable_wal(self) -> None:
        # Switching a new file from the rollback journal to WAL reads the header, then upgrades to
        # a write lock. When another connection is making the same switch (two profilers opening a
        # new file at once), SQLite answers SQLITE_BUSY at once instead of calling the busy
        # handler, because waiting while holding the read lock could deadlock. The statement has
        # released its locks by then, so trying again until the timeout is safe; once the file is
        # in WAL mode the pragma only reads.
        deadline = time.monotonic() + self.timeout_s
        delay_s = 0.001
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc) or time.monotonic() + delay_s > deadline:
                    raise
            time.sleep(delay_s)
            delay_s = min(2 * delay_s, 0.1)

    def _migrate(self) -> None:
        # Schema check and creation under one write lock (BEGIN IMMEDIATE waits through the busy
        # handler), so that two profilers opening a new file at once agree on one schema.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" in tables:
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    raise CodesignError(f"{self.path} has no schema version; it was not written by codesign")
                if int(row[0]) > SCHEMA_VERSION:
                    raise CodesignError(
                        f"{self.path} has schema version {row[0]}, newer than this codesign reads "
                        f"({SCHEMA_VERSION}); upgrade codesign or use another --db"
                    )
            elif tables:
                raise CodesignError(f"{self.path} is an SQLite file of another program; use another --db")
            else:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self._conn.execute(stmt)
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProfileDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, m: Measurement) -> bool:
        """Store one measurement; False if that (kernel, device, schedule) is already there."""
        spec = KernelSpec.from_key(m.kernel_key)
        cur = self._conn.execute(
            """INSERT INTO measurements (kernel_key, op, attrs_json, device, target_json, schedule,
                   latency_ms, latency_std_ms, repeats, energy_mj, energy_source, compile_s,
                   tvm_version, host, created_at, error)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kernel_key, device, schedule) DO NOTHING""",
            (
                m.kernel_key, spec.op, json.dumps(spec.to_dict(), sort_keys=True), m.device,
                json.dumps(m.target or {}, sort_keys=True), m.schedule, m.latency_ms,
                m.latency_std_ms, m.repeats, m.energy_mj, m.energy_source, m.compile_s,
                m.tvm_version, m.host or socket.gethostname(), m.created_at or time.time(), m.error,
            ),
        )
        return cur.rowcount == 1

    def delete_errors(self, device: str, schedule: str) -> int:
        """Forget failed rows so that they are measured again (``--retry-failed``)."""
        cur = self._conn.execute(
            "DELETE FROM measurements WHERE device=? AND schedule=? AND error IS NOT NULL", (device, schedule)
        )
        return cur.rowcount

    def has(self, kernel_key: str, device: str, schedule: str) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM measurements WHERE kernel_key=? AND device=? AND schedule=?",
                (kernel_key, device, schedule),
            ).fetchone()
            is not None
        )

    def query(
        self, device: str | None = None, op: str | None = None, schedule: str | None = None,
        ok_only: bool = False,
    ) -> list[Measurement]:
        """Measurements filtered by device, op and schedule (None: any)."""
        sql = "SELECT * FROM measurements WHERE 1=1"
        params: list = []
        for col, val in (("device", device), ("op", op), ("schedule", schedule)):
            if val is not None:
                sql += f" AND {col}=?"
                params.append(val)
        if ok_only:
            sql += " AND error IS NULL AND latency_ms IS NOT NULL"
        sql += " ORDER BY id"
        self._conn.row_factory = sqlite3.Row
        try:
            rows = self._conn.execute(sql, params).fetchall()
        finally:
            self._conn.row_factory = None
        return [
            Measurement(
                kernel_key=r["kernel_key"], device=r["device"], schedule=r["schedule"],
                latency_ms=r["latency_ms"], latency_std_ms=r["latency_std_ms"], repeats=r["repeats"],
                energy_mj=r["energy_mj"], energy_source=r["energy_source"],
                target=json.loads(r["target_json"]), compile_s=r["compile_s"],
                tvm_version=r["tvm_version"], host=r["host"], created_at=r["created_at"], error=r["error"],
            )
            for r in rows
        ]

    def status(self) -> list[dict]:
        """Counts per (device, schedule, op): measured, failed, median latency."""
        rows = self._conn.execute(
            """SELECT device, schedule, op, COUNT(*), SUM(error IS NOT NULL),
                      AVG(latency_ms), MIN(created_at), MAX(created_at)
               FROM measurements GROUP BY device, schedule, op ORDER BY device, schedule, op"""
        ).fetchall()
        return [
            {"device": d, "schedule": s, "op": o, "rows": n, "failed": int(f or 0),
             "mean_latency_ms": lat, "first": t0, "last": t1}
            for d, s, o, n, f, lat, t0, t1 in rows
        ]

    def missing(self, keys: Iterable[str], device: str, schedule: str) -> list[str]:
        """The keys not yet stored (measured or failed) for that device and schedule."""
        have = {
            r[0]
            for r in self._conn.execute(
                "SELECT kernel_key FROM measurements WHERE device=? AND schedule=?", (device, schedule)
            )
        }
        return [k for k in keys if k not in have]
