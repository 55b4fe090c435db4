"""The job queue: rows in the database, run one process per job by a dispatcher thread.

The queue is the ``jobs`` table, so it outlives the server: on start, jobs left running by a
server that died are re-queued (a second time: marked interrupted), each with a log line saying
why; on PostgreSQL, where several servers may share the queue, also while running, and only the
jobs of servers that are gone. A job runs in its own process (``python -m headstart.app.tasks``), so a fit cannot stall the
pages, and cancelling one ends its process group. At most ``workers`` jobs run at once and at most
one per project.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import update

from .db import Job, Store, now
from .tasks import ENV_DATA, ENV_DB, ENV_PARENT

logger = logging.getLogger("headstart.app")


class Dispatcher:
    def __init__(self, store: Store, data_dir: Path, workers: int = 1, poll_s: float = 0.5,
                 recover_s: float = 30.0) -> None:
        self.store, self.data_dir, self.workers, self.poll_s = store, data_dir, workers, poll_s
        self.recover_s, self.recovered = recover_s, 0.0
        self.running: dict[int, tuple[subprocess.Popen[bytes], str]] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._recover()
        self.thread = threading.Thread(target=self._loop, name="headstart-app-jobs", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop dispatching and end the running jobs' processes; their rows stay 'running' so the next
        start re-queues them (a stop is not a failure of the job)."""
        self.stop_event.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        with self.lock:
            for proc, _ in self.running.values():
                _kill(proc)
            self.running.clear()
        self.store.retire()  # on PostgreSQL, other servers may now take over this one's jobs

    def _recover(self) -> None:
        self.store.announce()  # first: this server's own running jobs are never taken for a dead server's
        for job_id, state in self.store.recover():
            logger.info("job %d was running when its server stopped: %s", job_id, state)
        self.recovered = time.monotonic()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.store.shared and time.monotonic() - self.recovered > self.recover_s:
                    self._recover()  # the jobs of another server sharing the database that died
                self._reap()
                while len(self.running) < self.workers and not self.stop_event.is_set():
                    job = self.store.claim_next()
                    if job is None:
                        break
                    self._spawn(job.id, job.claim or "")
            except Exception:  # the database was busy or gone for a moment: try again on the next tick
                logger.exception("job dispatcher")
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def _spawn(self, job_id: int, claim: str) -> None:
        env = {**os.environ, ENV_DB: self.store.url, ENV_DATA: str(self.data_dir), ENV_PARENT: str(os.getpid())}
        log = open(self.data_dir / "logs" / f"job-{job_id}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "headstart.app.tasks", str(job_id), claim], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        with self.lock:
            self.running[job_id] = (proc, claim)
        with self.store.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(pid=proc.pid))

    def _reap(self) -> None:
        with self.lock:
            ended = {j: pc for j, pc in self.running.items() if pc[0].poll() is not None}
            for j in ended:
                del self.running[j]
        for job_id, (proc, claim) in ended.items():
            # A process that died without writing its result (out of memory, killed): say so.
            if self.store.finish(job_id, "failed", claim=claim,
                                 error=f"The worker process ended with code {proc.returncode} before it finished "
                                       "(out of memory, or killed)."):
                self.store.append_log(job_id, f"Worker process ended with code {proc.returncode}")

    def submitted(self) -> None:
        self.wake.set()

    def cancel(self, job_id: int) -> str:
        """Cancel a queued or running job; returns its state afterwards."""
        with self.store.session() as s:
            queued = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                               .values(status="cancelled", finished=now(), error="Cancelled before it started."))
            if queued.rowcount:
                return "cancelled"
            running = s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                                .values(status="cancelled", finished=now(), error="Cancelled while it ran."))
        if running.rowcount:
            with self.lock:
                entry = self.running.pop(job_id, None)
            if entry is not None:
                _kill(entry[0])
            self.store.append_log(job_id, "Cancelled")
            self.wake.set()
            return "cancelled"
        with self.store.session() as s:
            job = s.get(Job, job_id)
            return job.status if job is not None else "missing"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
