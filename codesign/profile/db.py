"""ProfileDB: the measurements of every profiled kernel, in one SQLite file.

One row per (kernel key, device, schedule): latency (median, standard deviation, repeats),
energy and its source, the target, the TVM version, the host and the time. A kernel that failed
to build or run is stored with its error and no latency, so a rerun does not retry it unless
asked. Rows are committed one by one, so a killed profiler loses at most the kernel in flight;
writes go through WAL and ``INSERT ... ON CONFLICT DO NOTHING`` on the unique key, so two
profilers sharing a file neither corrupt it nor duplicate rows, and a profiler claims each kernel
(``claim``) before building it, so that two of them never compile and time the same kernel.

A file is checked before it is touched: a folder, another program's SQLite file, a damaged or newer
schema and, to write, a read-only file or folder are refused before anything (the switch to WAL
included) is written. Readers open the file read-only (``ProfileDB(path, readonly=True)``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CodesignError
from ..files import check_output, writable
from ..kernelspec import KernelSpec
from ..paths import cache_dir

SCHEMA_VERSION = 1
# How a row's latency_ms summarises its timed repeats (``codesign.profile.runners.STATISTICS``);
# rows stored before the column existed hold medians.
DEFAULT_STATISTIC = "median"
# Added to schema-1 files that lack them: older codesign versions read such files unchanged.
_EXTRA_COLUMNS = {"statistic": "TEXT"}
_CLAIMS = """CREATE TABLE IF NOT EXISTS claims (
    kernel_key TEXT NOT NULL, device TEXT NOT NULL, schedule TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, claimed_at REAL NOT NULL,
    PRIMARY KEY (kernel_key, device, schedule))"""
# Whole networks measured to calibrate a space's cost table (``TVMDeviceSource.calibrate``): one
# row per (network key, device, schedule). Created when first written; older codesign versions
# read files that have it unchanged.
_NETWORKS = """CREATE TABLE IF NOT EXISTS networks (
    network_key TEXT NOT NULL, device TEXT NOT NULL, schedule TEXT NOT NULL,
    latency_ms REAL NOT NULL, latency_std_ms REAL, statistic TEXT NOT NULL, tvm_version TEXT,
    host TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (network_key, device, schedule))"""
# A claim by a process on another host (whose liveness cannot be checked) lapses after this long.
CLAIM_STALE_S = 3600.0

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
    """``$CODESIGN_DB``, else ``profiles.sqlite`` in codesign's cache directory
    (``codesign.paths.cache_dir()``: ``$CODESIGN_CACHE_DIR`` or the user cache directory)."""
    import os

    env = os.environ.get("CODESIGN_DB")
    if env:
        return Path(env)
    return cache_dir("profiles.sqlite")


def tuning_dir_for(db_path: str | Path) -> Path:
    """The MetaSchedule tuning database kept beside a profile database: ``<db>.tuning``."""
    return Path(str(db_path) + ".tuning")


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
    statistic: str = DEFAULT_STATISTIC

    @property
    def spec(self) -> KernelSpec:
        return KernelSpec.from_key(self.kernel_key)

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency_ms is not None

    def to_dict(self) -> dict:
        return asdict(self)


def _read_only_uri(path: Path) -> str:
    """An SQLite URI that reads ``path`` without creating anything beside it. Reading a WAL file
    creates its -wal and -shm files unless the file is opened as immutable, which is right only
    while no writer has it open (a writer keeps its -wal file)."""
    immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
    return f"{path.resolve().as_uri()}?mode=ro{immutable}"


def _schema_problem(path: Path) -> str | None:
    """Why the existing SQLite file ``path`` is no codesign profile database this version can use
    (None: it is one, or an empty database), read without writing anything."""
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            return "is not a codesign profile database (not an SQLite file)"
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=60.0)
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})"
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables:
            return "is an SQLite file of another program; use another --db"
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            return "has no schema version; it was not written by codesign"
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            return f"has schema version {row[0]!r}, not a number; it was not written by codesign"
        if version > SCHEMA_VERSION:
            return (f"has schema version {version}, newer than this codesign reads ({SCHEMA_VERSION}); "
                    "upgrade codesign or use another --db")
        if "measurements" not in tables:
            return "is damaged: it has no measurements table"
        columns = {r[1] for r in conn.execute("PRAGMA table_info(measurements)")}
        missing = {"kernel_key", "device", "schedule", "latency_ms", "error"} - columns
        if missing:
            return f"is damaged: its measurements table lacks {', '.join(sorted(missing))}"
        return None
    except sqlite3.DatabaseError as exc:
        return f"is not a codesign profile database ({exc})"
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProfileDB:
    """A SQLite profile database. Use as a context manager or call close()."""

    def __init__(self, path: str | Path, readonly: bool = False, timeout_s: float = 60.0):
        """Open (or, unless ``readonly``, create) the database at ``path``.

        Args:
            path: the SQLite file; created with its schema if it does not exist (unless readonly).
            readonly: open for reading only; the file must exist and hold profiles.
            timeout_s: how long to wait for another profiler holding the file's write lock.

        Raises:
            CodesignError: a folder, a file that is not a codesign profile database or has a newer
                schema, no file at all (``readonly``), a read-only file or folder (to write), a
                file still locked by another process after timeout_s.
        """
        self.path = Path(path)
        self.readonly = readonly
        self.timeout_s = float(timeout_s)
        self._claims_ready = False
        self._check_before_touch()
        if readonly:
            try:
                self._conn = sqlite3.connect(_read_only_uri(self.path), uri=True, timeout=self.timeout_s,
                                             isolation_level=None)
                self._columns = {r[1] for r in self._conn.execute("PRAGMA table_info(measurements)")}
            except sqlite3.Error as exc:
                raise CodesignError(f"cannot read profile database {self.path}: {exc}") from exc
            if not self._columns:
                self._conn.close()
                raise CodesignError(f"profile database {self.path} is empty: it holds no profiles yet "
                                    "(`codesign profile` fills it)")
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise CodesignError(f"cannot open profile database {self.path}: {exc}") from exc
        try:
            self._enable_wal()
            self._migrate()
            self._add_columns()
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

    def _check_before_touch(self) -> None:
        """Refuse, before anything is written, a path this database cannot be (see the module
        docstring); an empty or missing file is a new database."""
        p = self.path
        if p.is_dir():
            raise CodesignError(f"profile database {p} is a folder, not a file")
        if not p.exists():
            if self.readonly:
                raise CodesignError(f"no profile database at {p}")
            check_output(p, "profile database")
            return
        if p.stat().st_size > 0:
            problem = _schema_problem(p)
            if problem:
                raise CodesignError(f"{p} {problem}")
        if not self.readonly:
            if not writable(p):
                raise CodesignError(f"profile database {p} is read-only; make it writable or profile into "
                                    "another --db")
            if not writable(p.parent):
                raise CodesignError(f"profile database {p}: its folder is read-only (SQLite writes its journal "
                                    "beside the file); use another --db")

    def _add_columns(self) -> None:
        self._columns = {r[1] for r in self._conn.execute("PRAGMA table_info(measurements)")}
        for name, sql_type in _EXTRA_COLUMNS.items():
            if name not in self._columns:
                try:
                    self._conn.execute(f"ALTER TABLE measurements ADD COLUMN {name} {sql_type}")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise
                self._columns.add(name)

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
                   tvm_version, host, created_at, error, statistic)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kernel_key, device, schedule) DO NOTHING""",
            (
                m.kernel_key, spec.op, json.dumps(spec.to_dict(), sort_keys=True), m.device,
                json.dumps(m.target or {}, sort_keys=True), m.schedule, m.latency_ms,
                m.latency_std_ms, m.repeats, m.energy_mj, m.energy_source, m.compile_s,
                m.tvm_version, m.host or socket.gethostname(), m.created_at or time.time(), m.error,
                m.statistic,
            ),
        )
        return cur.rowcount == 1

    def lower_latency(self, kernel_key: str, device: str, schedule: str, latency_ms: float,
                      latency_std_ms: float, repeats: int) -> bool:
        """Replace a stored kernel's timing by a faster one of the same statistic (a second timing
        on a quieter machine); False where the row is missing, failed or already faster."""
        cur = self._conn.execute(
            """UPDATE measurements SET latency_ms=?, latency_std_ms=?, repeats=?
               WHERE kernel_key=? AND device=? AND schedule=? AND error IS NULL AND latency_ms > ?""",
            (latency_ms, latency_std_ms, repeats, kernel_key, device, schedule, latency_ms),
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
                statistic=(r["statistic"] if "statistic" in self._columns else None) or DEFAULT_STATISTIC,
            )
            for r in rows
        ]

    def cpus(self, device: str) -> set[str]:
        """The CPUs (LLVM's ``mcpu`` in each stored target) whose timings of ``device`` the database
        holds; targets that name none (a GPU, the torch reference) are left out."""
        rows = self._conn.execute("SELECT DISTINCT target_json FROM measurements WHERE device=? AND error IS NULL",
                                  (device,)).fetchall()
        out = set()
        for (text,) in rows:
            try:
                mcpu = json.loads(text).get("mcpu")
            except (TypeError, ValueError, AttributeError):
                continue
            if mcpu:
                out.add(str(mcpu))
        return out

    def statistics(self, device: str, schedule: str) -> set[str]:
        """The statistics (``median``, ``min``...) of the stored timings of a device and schedule."""
        if "statistic" not in self._columns:
            stored = self._conn.execute("SELECT 1 FROM measurements WHERE device=? AND schedule=? AND error IS NULL "
                                        "LIMIT 1", (device, schedule)).fetchone()
            return {DEFAULT_STATISTIC} if stored else set()
        rows = self._conn.execute("SELECT DISTINCT statistic FROM measurements WHERE device=? AND schedule=? "
                                  "AND error IS NULL", (device, schedule)).fetchall()
        return {r[0] or DEFAULT_STATISTIC for r in rows}

    def claim(self, kernel_key: str, device: str, schedule: str, stale_after_s: float = CLAIM_STALE_S) -> str:
        """Claim a kernel for this process before building it.

        Returns:
            ``"claimed"`` (build and store it, then ``release``), ``"stored"`` (another process
            stored it meanwhile: skip it) or ``"held"`` (another live profiler is building it: come
            back later). A claim whose process has died on this host, or that is older than
            ``stale_after_s``, is taken over.
        """
        if not self._claims_ready:
            self._conn.execute(_CLAIMS)
            self._claims_ready = True
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        where = (kernel_key, device, schedule)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if self.has(*where):
                state = "stored"
            else:
                row = self._conn.execute("SELECT host, pid, claimed_at FROM claims WHERE kernel_key=? AND device=? "
                                         "AND schedule=?", where).fetchone()
                held = row is not None and (row[0], row[1]) != (host, pid) and now - row[2] < stale_after_s \
                    and (row[0] != host or _alive(row[1]))
                state = "held" if held else "claimed"
                if not held:
                    self._conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)", (*where, host, pid, now))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return state

    def release(self, kernel_key: str, device: str, schedule: str) -> None:
        """Drop this process's claim of a kernel (after storing it)."""
        if self._claims_ready:
            self._conn.execute("DELETE FROM claims WHERE kernel_key=? AND device=? AND schedule=? AND host=? AND pid=?",
                               (kernel_key, device, schedule, socket.gethostname(), os.getpid()))

    def network_latency(self, network_key: str, device: str, schedule: str, statistic: str) -> float | None:
        """A whole network's stored latency (``add_network``) under that statistic, or None."""
        try:
            row = self._conn.execute("SELECT latency_ms FROM networks WHERE network_key=? AND device=? AND "
                                     "schedule=? AND statistic=?", (network_key, device, schedule, statistic)).fetchone()
        except sqlite3.OperationalError as exc:  # no network stored yet: the table does not exist
            if "no such table" in str(exc):
                return None
            raise
        return None if row is None else float(row[0])

    def add_network(self, network_key: str, device: str, schedule: str, latency_ms: float,
                    latency_std_ms: float | None, statistic: str, tvm_version: str | None = None) -> None:
        """Store a whole network's measured latency (replacing an earlier one of the same key)."""
        if not (isinstance(latency_ms, (int, float)) and latency_ms > 0 and latency_ms < float("inf")):
            raise CodesignError(f"a network latency must be a finite positive number, got {latency_ms!r}")
        self._conn.execute(_NETWORKS)
        self._conn.execute("INSERT OR REPLACE INTO networks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (network_key, device, schedule, float(latency_ms), latency_std_ms, statistic,
                            tvm_version, socket.gethostname(), time.time()))

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
