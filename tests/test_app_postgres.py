"""The web app on PostgreSQL: a real server of its own (the ``postgres`` fixture), the whole
upload-check-fit path through ``headstart app --database-url``, the rows read back from PostgreSQL
directly, jobs across a kill -9, claims made at the same moment by two servers, and database URLs
that cannot be used (a message naming the URL, password hidden, and the fix)."""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_app import Server, _alive, two_checked_projects, wait_job

PASSWORD = "hunter2-secret"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


# -- URLs that cannot be used: no server needed ---------------------------------------------------

BAD_URLS = [
    (lambda: f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:{_closed_port()}/headstart",
     ["Could not use the database at 'postgresql+psycopg://bob:***@127.0.0.1:", "Connection refused", "createdb"]),
    (lambda: f"postgres ql://bob:{PASSWORD}@db/headstart", ["is not a SQLAlchemy URL", "postgresql+psycopg://USER"]),
    (lambda: f"postgresql+psycopg://bob:{PASSWORD}@db:port/headstart", ["is not a SQLAlchemy URL", "bob:***@db"]),
    (lambda: f"postgresql+nosuchdriver://bob:{PASSWORD}@db/headstart",
     ["'postgresql+nosuchdriver'", "does not know", "bob:***@db"]),
    (lambda: f"sqlite:////nonexistent-{PASSWORD}-dir/app.sqlite", ["unable to open database file", "folder exists"]),
    (lambda: "sqlite://", ["in-memory SQLite database", "sqlite:////path/to/app.sqlite"]),
    (lambda: "sqlite:///:memory:", ["in-memory SQLite database", "cannot share it"]),
    (lambda: f"postgresql+psycopg://bob:hunter@2@127.0.0.1:{_closed_port()}/headstart",
     ["more than one '@' before the host", "bob:***@127.0.0.1", "%40"]),
    # a one-character password is not masked inside the driver's reason, which stays readable
    (lambda: f"postgresql+psycopg://bob:1@127.0.0.1:{_closed_port()}/headstart",
     ['connection to server at "127.0.0.1"', "Connection refused", "bob:***@127.0.0.1"]),
]


@pytest.mark.parametrize("make,words", BAD_URLS, ids=["refused", "no-scheme", "bad-port", "unknown-driver", "sqlite",
                                                     "sqlite-memory", "sqlite-memory-named", "unencoded-at",
                                                     "short-password"])
def test_a_database_url_that_cannot_be_used_is_named_with_the_fix(make, words) -> None:
    from headstart.app.db import Store
    from headstart.errors import ConfigError

    url = make()
    with pytest.raises(ConfigError) as err:
        Store(url)
    message = str(err.value)
    for w in words:
        assert w in message, message
    assert "Fix:" in message and "--db" in message
    if "sqlite" not in url:
        assert PASSWORD not in message


def test_hide_password() -> None:
    from headstart.app.db import hide_password

    assert hide_password("postgresql+psycopg://bob:pw@db:5432/x") == "postgresql+psycopg://bob:***@db:5432/x"
    assert hide_password("postgresql://bob:p@ss:w@db/x") == "postgresql://bob:***@db/x"  # an unencoded @
    assert hide_password("postgresql://bob@db/x?password=pw&sslmode=require") == \
        "postgresql://bob@db/x?password=***&sslmode=require"
    assert hide_password("sqlite:////tmp/a.sqlite") == "sqlite:////tmp/a.sqlite"


# -- a real PostgreSQL server ---------------------------------------------------------------------

@pytest.mark.slow
def test_the_app_keeps_its_rows_in_postgresql(postgres, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = postgres.database()
    data = tmp_path / "data"
    s = Server(data, "--database-url", url).start()
    try:
        with s.client() as c:
            pid = c.post("/api/projects", json={"name": "Digits on Postgres"}).json()["id"]
            staged = c.post(f"/api/projects/{pid}/examples", json={"name": "mnist", "per_class": 8})
            assert staged.status_code == 200, staged.text
            made = c.post(f"/api/projects/{pid}/versions", json={"upload_id": staged.json()["upload_id"]})
            assert made.status_code == 200, made.text
            check = wait_job(c, made.json()["check_job"])
            assert check["status"] == "done", check["log"][-2000:]
            fit = c.post(f"/api/projects/{pid}/jobs",
                         json={"kind": "fit", "params": {"strategy": "prototypes", "backbone": "raw-pixels"}})
            assert fit.status_code == 200, fit.text
            second = c.post(f"/api/projects/{pid}/jobs", json={"kind": "fit", "params": {"budget_s": 60}})
            assert second.status_code == 409  # one fit per project, on PostgreSQL too
            done = wait_job(c, fit.json()["id"])
            assert done["status"] == "done", done["log"][-2000:]
            run_id = done["result"]["run_id"]
            assert c.get(f"/api/runs/{run_id}").json()["summary"]["chosen"] == "prototypes"
            listed = c.get("/api/projects").json()["projects"]
            assert [(p["name"], p["versions"], p["runs"]) for p in listed] == [("Digits on Postgres", 1, 1)]
    finally:
        s.stop()
    assert not (data / "headstart-app.sqlite").exists()  # nothing went to the embedded default
    said = (data.parent / f"server-{s.port}.log").read_text()
    assert f"(database {url.replace(postgres.password, '***')})" in said and postgres.password not in said

    # The rows, read from PostgreSQL itself (plain SQL, not the app's models).
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM projects")).scalars().all() == ["Digits on Postgres"]
            n_items, counts, path = conn.execute(
                text("SELECT n_items, class_counts, path FROM versions WHERE project_id = :p"), {"p": pid}).one()
            assert n_items == 80 and len(counts) == 10 and set(counts.values()) == {8}
            assert (data / path / "data").is_dir()
            jobs = conn.execute(text("SELECT id, kind, status, attempts, log, result, started, finished FROM jobs "
                                     "ORDER BY id")).all()
            assert [(j.kind, j.status, j.attempts) for j in jobs] == [("check", "done", 1), ("fit", "done", 1)]
            fit_row = jobs[1]
            assert fit_row.result["run_id"] == run_id and fit_row.log.strip()
            assert fit_row.started.tzinfo is not None and fit_row.finished >= fit_row.started
            run = conn.execute(text("SELECT job_id, path, summary FROM runs WHERE id = :r"), {"r": run_id}).one()
            assert run.job_id == fit_row.id and run.summary["chosen"] == "prototypes"
            assert 0.0 <= run.summary["accuracy"] <= 1.0
            assert (data / run.path / "headstart.json").is_file()
            kinds = dict(conn.execute(text("SELECT column_name, data_type FROM information_schema.columns "
                                           "WHERE table_name = 'jobs'")).all())
            assert kinds["result"] == "json" and kinds["started"] == "timestamp with time zone"
    finally:
        engine.dispose()


@pytest.mark.slow
def test_jobs_survive_a_kill_9_on_postgresql(postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import create_engine, text

    url = postgres.database()
    monkeypatch.setenv("HEADSTART_APP_DB", url)  # the URL from the environment: no password in `ps`
    data = tmp_path / "data"
    s = Server(data).start()
    fit = {"kind": "fit", "params": {"strategy": "prototypes", "backbone": "raw-pixels"}}
    engine = create_engine(url)

    def worker_pid(job_id: int) -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pid FROM jobs WHERE id = :j"), {"j": job_id}).scalar() or 0)

    try:
        with s.client() as c:
            projects = two_checked_projects(c, tmp_path)
            running, queued = (c.post(f"/api/projects/{pid}/jobs", json=fit).json()["id"] for pid in projects)
            deadline = time.time() + 60
            while not worker_pid(running) and time.time() < deadline:
                time.sleep(0.05)
            assert c.get(f"/api/jobs/{queued}").json()["status"] == "queued"  # one worker: it waits
        worker = worker_pid(running)
        assert worker and _alive(worker)
        s.stop(signal.SIGKILL)
        deadline = time.time() + 10
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived the server"
        with engine.connect() as conn:  # as the killed server left them
            left = dict(conn.execute(text("SELECT id, status FROM jobs WHERE kind = 'fit'")).all())
        assert left == {running: "running", queued: "queued"}

        s = Server(data).start()
        with s.client() as c:
            for j in (running, queued):
                done = wait_job(c, j)
                assert done["status"] == "done", done["log"][-2000:]
            assert "Re-queued: the server stopped" in c.get(f"/api/jobs/{running}").json()["log"]
            assert "Re-queued" not in c.get(f"/api/jobs/{queued}").json()["log"]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT j.id, j.attempts, r.id AS run FROM jobs j JOIN runs r ON r.job_id = j.id "
                                     "WHERE j.kind = 'fit' ORDER BY j.id")).all()
        assert [(r.id, r.attempts) for r in rows] == [(running, 2), (queued, 1)]  # one run each, none lost
    finally:
        s.stop()
        engine.dispose()


@pytest.mark.slow
def test_two_servers_claiming_at_once_start_one_job_per_project(postgres) -> None:
    from headstart.app.db import Job, Project, Store

    url = postgres.database()
    stores = [Store(url), Store(url)]  # two engines, as two servers sharing the database have
    with stores[0].session() as s:
        projects = [Project(name=f"p{i}") for i in range(3)]
        s.add_all(projects)
        s.flush()
        for _ in range(4):
            s.add_all([Job(project_id=p.id, kind="fit") for p in projects])
    claimed: list[tuple[int, int]] = []
    for _round in range(4):  # each round: both claim at the same moment until nothing is left, then all end
        gate = threading.Barrier(len(stores) * 2)
        got: list[Job] = []

        def claim(store: Store) -> None:
            gate.wait()
            while (job := store.claim_next()) is not None:
                got.append(job)

        threads = [threading.Thread(target=claim, args=(st,)) for st in stores for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(j.project_id for j in got) == sorted(p.id for p in projects)  # one per project, each once
        claimed += [(j.id, j.project_id) for j in got]
        for j in got:
            assert stores[0].finish(j.id, "done", claim=j.claim, result={"loss": math.nan, "n": [1.0, math.inf]})
    assert len({j for j, _ in claimed}) == 12  # every job exactly once
    with stores[0].session() as s:
        job = s.get(Job, claimed[0][0])
        assert job.result == {"loss": None, "n": [1.0, None]}  # standard JSON: PostgreSQL refuses NaN
    stores[0].append_log(claimed[0][0], "a line with a NUL \x00 byte")  # PostgreSQL text refuses NUL
    with stores[1].session() as s:
        assert "a line with a NUL \ufffd byte" in s.get(Job, claimed[0][0]).log
    for st in stores:
        st.engine.dispose()


def _queue_one_fit(store) -> None:
    """A project "p" with one queued fit job."""
    from headstart.app.db import Job, Project

    with store.session() as s:
        p = Project(name="p")
        s.add(p)
        s.flush()
        s.add(Job(project_id=p.id, kind="fit"))


@pytest.mark.slow
def test_recover_on_postgresql(postgres) -> None:
    from headstart.app.db import Store

    store = Store(postgres.database())
    _queue_one_fit(store)
    first = store.claim_next()
    assert first is not None and first.status == "running"
    assert store.recover() == [(first.id, "queued")]
    assert not store.finish(first.id, "done", claim=first.claim)  # the old attempt's claim no longer writes
    second = store.claim_next()
    assert second is not None and second.attempts == 2
    assert store.recover() == [(first.id, "interrupted")]
    assert store.claim_next() is None
    store.engine.dispose()


@pytest.mark.slow
def test_a_server_recovers_the_jobs_of_a_dead_server_only(postgres) -> None:
    from headstart.app.db import Job, Store

    url = postgres.database()
    a, b = Store(url), Store(url)  # two servers on one database
    a.announce()
    b.announce()
    _queue_one_fit(a)
    job = a.claim_next()
    assert job is not None
    assert b.recover() == []  # a runs it and is alive: b leaves it alone
    # The database drops a's connection (a restart of PostgreSQL does): a takes its lock again.
    from sqlalchemy import text

    lost = a._alive.execute(text("SELECT pg_backend_pid()")).scalar()
    a._alive.commit()
    with b.session() as s:
        assert s.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": lost})
    deadline = time.time() + 10
    while time.time() < deadline:
        with b.session() as s:
            if not s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": lost}):
                break
        time.sleep(0.05)
    a.announce()
    assert a._alive.execute(text("SELECT pg_backend_pid()")).scalar() != lost
    a._alive.commit()
    assert b.recover() == []
    a.append_log(job.id, "still a's", claim=job.claim)
    a.retire()  # a stops (a kill -9 ends its connection, and the lock with it: the kill -9 test)
    assert b.recover() == [(job.id, "queued")]
    again = b.claim_next()
    assert again is not None and again.claim.startswith(b.owner)
    assert not a.finish(job.id, "done", claim=job.claim)  # a's left-over worker writes nothing
    assert b.finish(job.id, "done", claim=again.claim)
    with b.session() as s:
        assert "still a's" in s.get(Job, job.id).log and s.get(Job, job.id).status == "done"
    for st in (a, b):
        st.retire()
        st.engine.dispose()


@pytest.mark.slow
def test_a_wrong_password_is_a_message_not_a_traceback(postgres, tmp_path: Path) -> None:
    url = postgres.url(postgres.database().rsplit("/", 1)[1], password="not-the-password")
    out = subprocess.run([sys.executable, "-m", "headstart", "app", "--database-url", url, "--port",
                          str(_closed_port()), "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "password authentication failed" in out.stderr and "Fix:" in out.stderr
    assert "Traceback" not in out.stderr and "not-the-password" not in out.stderr
    assert f"headstart:***@127.0.0.1:{postgres.port}/" in out.stderr
