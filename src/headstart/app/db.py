"""What the web app remembers: projects, data versions, runs and jobs, through SQLAlchemy.

SQLite under the data folder is the embedded default (WAL journal, so the server and its worker
processes read while one writes); any SQLAlchemy URL works, PostgreSQL tested
(``postgresql+psycopg://...``, the ``postgres`` extra). JSON columns hold what the library returns
(check reports, ladder tables, metrics) as it returns it, with NaN and infinities stored as null
(standard JSON, which PostgreSQL's ``json`` type and the pages' ``JSON.parse`` both require).

Several processes, perhaps on several machines, share the queue: a job is claimed by one
conditional UPDATE (``status = 'queued'``), and claims are serialised so two dispatchers never start
two jobs of one project (on PostgreSQL a transaction-level advisory lock; SQLite has a single writer).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, create_engine, event, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ..errors import ConfigError

JOB_KINDS = ("check", "deep", "ladder", "fit", "export")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
CLAIM_LOCK = 0x6865616473746172  # "headstar": the advisory lock that serialises claims on PostgreSQL
CONNECT_TIMEOUT_S = 10


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)  # set by the first upload
    created: Mapped[datetime] = mapped_column(default=now)


class DataVersion(Base):
    """One immutable state of a project's data. An upload makes version 1 (or the next number); a
    relabelling makes a new version from its parent; none is ever changed in place."""

    __tablename__ = "versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # "images" (class folders) or "table" (data.csv)
    path: Mapped[str] = mapped_column(String(500))  # relative to the data folder
    note: Mapped[str] = mapped_column(Text, default="")
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    class_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(default=now)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # export: the run exported
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A fresh token per start: a worker writes only while the job is still the one it was given, so a
    # process left over from before a restart can never write into the job's next attempt.
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created: Mapped[datetime] = mapped_column(default=now)
    started: Mapped[datetime | None] = mapped_column(nullable=True)
    finished: Mapped[datetime | None] = mapped_column(nullable=True)


class Run(Base):
    """A trained model: its folder under the data folder and the numbers to compare it by."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    path: Mapped[str] = mapped_column(String(500))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(default=now)


def _lock_key(hex16: str) -> int:
    """A 64-bit advisory lock key (signed, as PostgreSQL's bigint) from 16 hex digits."""
    try:
        return int(hex16, 16) - (1 << 63)
    except ValueError:
        return 0


class _NotRunning(Exception):
    pass


def database_url(db: str | None, data_dir: Path) -> str:
    """``db`` as given, or the SQLite file inside the data folder."""
    return db or f"sqlite:///{(data_dir / 'headstart-app.sqlite').absolute()}"


def hide_password(url: str) -> str:
    """The URL as it may be shown: the password (in the authority or as ``password=``) replaced by ***."""
    shown = re.sub(r"^(.*?//[^:/@]*:).*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", shown)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_dumps(value: Any) -> str:
    """Standard JSON for the JSON columns: NaN and infinities (a metric with no value) become null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def clean_text(value: str) -> str:
    """Text a text column can hold anywhere: PostgreSQL refuses NUL characters."""
    return value.replace("\x00", "\ufffd")


_URL_FIX = ("Give a SQLAlchemy URL such as postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE (characters such "
            "as @ : / in the password percent-encoded), or leave --db out to keep the database in SQLite inside "
            "--data-dir.")


def make_engine(url: str) -> Engine:
    """The engine, its tables made if missing; a URL that cannot be used raises ConfigError naming it
    (password hidden) and the fix, never a driver's traceback."""
    shown = hide_password(url)
    authority = url.split("//", 1)[1].split("/", 1)[0] if "//" in url else ""
    if authority.count("@") > 1:  # SQLAlchemy would read the part after the first '@' as the host
        raise ConfigError(f"The database URL '{shown}' has more than one '@' before the host.",
                          fix="Percent-encode '@' in the user name or password as %40 (and ':' as %3A, '/' as %2F), "
                              "or leave --db out to keep the database in SQLite inside --data-dir.")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"The database URL '{shown}' is not a SQLAlchemy URL ({exc}).", fix=_URL_FIX) from None
    if parsed.get_backend_name() == "sqlite" and (parsed.database or ":memory:") == ":memory:" or \
            parsed.query.get("mode") == "memory":
        # each connection (the server, every job process) would get its own empty database
        raise ConfigError(f"The database URL '{shown}' is an in-memory SQLite database: the server and its job "
                          "processes cannot share it, and it is lost at exit.",
                          fix="Give a file, e.g. sqlite:////path/to/app.sqlite, or leave --db out to keep the "
                              "database in SQLite inside --data-dir.")
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}  # an unreachable host fails soon
    try:
        engine = create_engine(parsed, future=True, pool_pre_ping=True, json_serializer=json_dumps, **options)
    except NoSuchModuleError:
        raise ConfigError(f"The database URL '{shown}' names a database or driver SQLAlchemy does not know "
                          f"('{parsed.drivername}').", fix=_URL_FIX) from None
    except ImportError as exc:
        extra = " (pip install 'headstart[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        raise ConfigError(f"The database URL '{shown}' needs the driver '{exc.name or exc}', which is not installed.",
                          fix=f"Install it{extra}, or leave --db out to use SQLite inside --data-dir.") from None
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
            cur.execute("PRAGMA busy_timeout=30000")  # server and workers write the same file
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    try:
        Base.metadata.create_all(engine)
    except DBAPIError as exc:
        engine.dispose()
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0].rstrip(".")
        # A password of a few characters also occurs in ordinary words and numbers ("1" in the host's
        # address): masking it there would garble the reason, and drivers do not echo short secrets.
        if parsed.password and len(str(parsed.password)) >= 4:
            reason = reason.replace(str(parsed.password), "***")
        if engine.dialect.name == "sqlite":
            fix = "Check that the file's folder exists and that this user may write in it; or leave --db out."
        else:
            fix = ("Check that the database server runs and accepts connections at that host and port, that the "
                   "user, password and database name are right (create the database first, e.g. createdb), and "
                   "that the user may create tables in it; or leave --db out to use SQLite inside --data-dir.")
        raise ConfigError(f"Could not use the database at '{shown}': {reason}.", fix=fix) from None
    return engine


class Store:
    """The engine and a session factory; ``with store.session() as s:`` commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Each claim starts with the id of the server that made it; on PostgreSQL a live server holds a
        # lock named by its id (``announce``), so another server sharing the database can tell its
        # running jobs from those of a server that died.
        self.owner = uuid.uuid4().hex[:16]
        self._alive: Any = None

    @property
    def shared(self) -> bool:
        """Whether servers can tell each other alive (PostgreSQL), so running jobs are recovered
        only from servers that are gone, at any time; elsewhere only at start."""
        return self.engine.dialect.name == "postgresql"

    def announce(self) -> None:
        """PostgreSQL: hold a session lock named by this server's id for as long as it runs (the
        database drops it when the server's connection ends, ``kill -9`` included). Called again, it
        checks the connection and takes the lock again if the database lost it (a restart)."""
        if not self.shared:
            return
        if self._alive is not None:
            try:
                self._alive.execute(text("SELECT 1"))
                self._alive.commit()
                return
            except DBAPIError:
                self._alive.invalidate()
                self._alive.close()
                self._alive = None
        if self._alive is None:
            conn = self.engine.connect()
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(self.owner)})
            conn.commit()
            self._alive = conn

    def retire(self) -> None:
        """Give up the lock ``announce`` took: other servers may now recover this one's jobs."""
        if self._alive is not None:
            try:
                self._alive.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(self.owner)})
                self._alive.commit()
            except DBAPIError:  # the connection is gone, and the lock with it
                self._alive.invalidate()
            self._alive.close()
            self._alive = None

    def _owner_gone(self, s: Session, claim: str | None) -> bool:
        if not self.shared or not claim:
            return True
        key = _lock_key(claim[:16])
        if not s.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
            return False  # held: that server is alive
        s.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        return True

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def append_log(self, job_id: int, line: str, claim: str | None = None) -> None:
        with self.session() as s:
            # Locked (PostgreSQL: FOR UPDATE), so the worker's lines and the server's never overwrite each other.
            job = s.get(Job, job_id, with_for_update=True)
            if job is not None and (claim is None or job.claim == claim):
                stamp = now().strftime("%H:%M:%S")
                job.log = (job.log + f"{stamp} {clean_text(line)}\n")[-200_000:]

    def finish(self, job_id: int, status: str, *, result: dict[str, Any] | None = None, error: str = "",
               claim: str | None = None, run: Run | None = None) -> bool:
        """Move a running job to its final state, with the ``run`` it made in the same transaction;
        False (and no run) when the job is no longer running (cancelled) or, with ``claim``, no
        longer the attempt that claim was given to."""
        cond = [Job.id == job_id, Job.status == "running"] + ([Job.claim == claim] if claim is not None else [])
        try:
            with self.session() as s:
                if run is not None:
                    s.add(run)
                    s.flush()
                    result = {**(result or {}), "run_id": run.id}
                done = s.execute(update(Job).where(*cond)
                                 .values(status=status, result=result, error=clean_text(error), finished=now(),
                                         pid=None))
                if not done.rowcount:
                    raise _NotRunning
        except _NotRunning:
            return False
        return True

    def claim_next(self, pid_placeholder: int = 0) -> Job | None:
        """The oldest queued job whose project has no other job running, now marked running."""
        with self.session() as s:
            if self.engine.dialect.name == "postgresql":  # one claim at a time, whichever server makes it
                s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
            busy = set(s.scalars(select(Job.project_id).where(Job.status == "running")))
            for job in s.scalars(select(Job).where(Job.status == "queued").order_by(Job.id)):
                if job.project_id in busy:
                    continue
                claimed = s.execute(update(Job).where(Job.id == job.id, Job.status == "queued")
                                    .values(status="running", started=now(), attempts=Job.attempts + 1,
                                            pid=pid_placeholder, claim=self.owner + uuid.uuid4().hex[:16]))
                if claimed.rowcount:
                    s.flush()
                    s.refresh(job)
                    return job
        return None

    def recover(self, max_attempts: int = 2) -> list[tuple[int, str]]:
        """After a stop: every job left running is re-queued (or, after ``max_attempts``, marked
        interrupted), each with a line in its log that says so. Returns (job id, new state). On
        PostgreSQL only the jobs of servers that are gone: never those another live server runs."""
        changed = []
        with self.session() as s:
            for job in s.scalars(select(Job).where(Job.status == "running").order_by(Job.id).with_for_update()):
                if not self._owner_gone(s, job.claim):
                    continue
                stamp = now().strftime("%H:%M:%S")
                if job.attempts < max_attempts:
                    job.status, job.pid, job.started, job.claim = "queued", None, None, None
                    job.log += (f"{stamp} Re-queued: the server stopped while this job ran "
                                f"(attempt {job.attempts} of {max_attempts}).\n")
                else:
                    job.status, job.pid, job.finished, job.claim = "interrupted", None, now(), None
                    job.error = (f"The server stopped while this job ran, {job.attempts} times; it was not "
                                 "started again. Start it again from the project page.")
                    job.log += f"{stamp} {job.error}\n"
                changed.append((job.id, job.status))
        return changed
