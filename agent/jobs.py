"""Repair runs as background jobs: queued, run by a pool of worker threads, answered, cancelled, and
picked up again after the process restarts. For every front end that is not a terminal (the HTTP
service, the Slack bot, the chat).

A job is a repair run plus who asked for it. Both live in one SQLite file, the checkpoint file of
the runs (``$FIXLOOP_HOME/runs.sqlite``): the loop's state in LangGraph's checkpoints, the job's own
rows (owner, status, the order, a page token, the progress lines) in two tables beside them. Nothing
that matters lives only in memory, so a server that died comes back with every run:

- a job still **queued** is started;
- a job that was **running** resumes from its last checkpoint (finished steps, paid calls included,
  are not repeated), or, with ``resume_interrupted=False``, is reported ``interrupted`` with the
  command that resumes it;
- a job **waiting for approval** waits on, in its checkpoint.

Statuses (:class:`JobStatus`): ``queued``, ``running``, ``waiting_approval``, ``done`` (the run
finished, whatever its verdict), ``failed`` (the run itself could not go on), ``cancelled``,
``interrupted``.

    manager = JobManager(JobStore(db), db=db, workers=2)
    manager.start()
    job = manager.submit(order, owner="client-a")
    manager.answer(job.id, approve=True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fixloop.agent.events import ProgressLine, as_text, describe
from fixloop.checks.images import InputError

if TYPE_CHECKING:
    from fixloop.agent.service import RepairOrder
    from fixloop.agent.state import RunState

log = logging.getLogger("fixloop.jobs")

CANCELLED_REASON = "cancelled: stopped on request; the image so far is delivered"
# Events at which a cancel request stops the run: each is raised between two whole steps of the loop
# (before a target is chosen, before a tool runs), so nothing done is lost and no paid call is cut off.
CANCEL_POINTS = {"start", "resume", "target", "plan", "open", "repair"}


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    waiting_approval = "waiting_approval"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"


ACTIVE = {JobStatus.queued, JobStatus.running}
SETTLED = {JobStatus.done, JobStatus.failed, JobStatus.cancelled, JobStatus.interrupted}


class RunCancelled(Exception):
    """Raised from a run's progress callback when its job was cancelled."""


class JobConflict(InputError):
    """The job is not in a state that allows this (approve a run that does not wait, ...)."""


def run_status(state: "RunState | None", waiting: bool, working: bool) -> JobStatus:
    """The status a run's checkpoint stands for: ``working`` when a worker is on it now."""
    if state is None:
        return JobStatus.queued if working else JobStatus.interrupted
    if state.finished:
        return JobStatus.cancelled if is_cancelled(state) else JobStatus.done
    if waiting:
        return JobStatus.waiting_approval
    return JobStatus.running if working else JobStatus.interrupted


def resume_command(run_id: str) -> str:
    return f"fixloop repair --resume {run_id}"


@dataclass
class Job:
    id: str  # the run id
    owner: str
    token: str  # grants the review page of this run alone
    status: JobStatus
    created: float
    updated: float
    order: dict[str, Any]
    error: str | None = None
    cancel_requested: bool = False
    summary: dict[str, Any] = field(default_factory=dict)  # verdict, stop reason, spend: for lists

    @property
    def out_dir(self) -> Path:
        return Path(self.order["out"])


# ---- the store ----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fixloop_jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, token TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, order_json TEXT NOT NULL, error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, summary_json TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS fixloop_jobs_owner ON fixloop_jobs (owner, created);
CREATE TABLE IF NOT EXISTS fixloop_job_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, event TEXT NOT NULL,
    text TEXT NOT NULL, data_json TEXT NOT NULL, PRIMARY KEY (job_id, seq));
"""


@dataclass
class StoredEvent:
    seq: int
    time: float
    event: str
    text: str
    data: dict[str, Any]


class JobStore:
    """The jobs' rows in the runs' SQLite file (one connection, serialised by a lock)."""

    def __init__(self, db: str | Path):
        self.path = Path(db)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path} is not a fixloop checkpoint file ({exc}): move it away") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _row(self, row) -> Job:
        return Job(id=row[0], owner=row[1], token=row[2], status=JobStatus(row[3]), created=row[4], updated=row[5],
                   order=json.loads(row[6]), error=row[7], cancel_requested=bool(row[8]),
                   summary=json.loads(row[9] or "{}"))

    _COLUMNS = "id, owner, token, status, created, updated, order_json, error, cancel_requested, summary_json"

    def create(self, run_id: str, owner: str, order: dict[str, Any]) -> Job:
        now = time.time()
        job = Job(id=run_id, owner=owner, token=secrets.token_urlsafe(24), status=JobStatus.queued,
                  created=now, updated=now, order=order)
        with self._lock, self._conn:
            self._conn.execute(f"INSERT INTO fixloop_jobs ({self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                               (job.id, owner, job.token, job.status.value, now, now, json.dumps(order), None, 0, "{}"))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {self._COLUMNS} FROM fixloop_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._row(row)

    def jobs(self, owner: str | None = None, statuses: set[JobStatus] | None = None) -> list[Job]:
        """Newest first."""
        sql, args = f"SELECT {self._COLUMNS} FROM fixloop_jobs", []
        if owner is not None:
            sql, args = sql + " WHERE owner = ?", [owner]
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created DESC, id DESC", args).fetchall()
        found = [self._row(r) for r in rows]
        return [j for j in found if statuses is None or j.status in statuses]

    def update(self, job_id: str, **values: Any) -> None:
        columns = {"status": lambda v: JobStatus(v).value, "error": lambda v: v,
                   "cancel_requested": lambda v: int(bool(v)), "summary": json.dumps}
        sets = [f"{'summary_json' if k == 'summary' else k} = ?" for k in values]
        args = [columns[k](v) for k, v in values.items()]
        with self._lock, self._conn:
            self._conn.execute(f"UPDATE fixloop_jobs SET {', '.join(sets)}, updated = ? WHERE id = ?",
                               [*args, time.time(), job_id])

    def add_events(self, job_id: str, lines: list[ProgressLine]) -> None:
        if not lines:
            return
        now = time.time()
        with self._lock, self._conn:
            (last,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM fixloop_job_events WHERE job_id = ?",
                                         (job_id,)).fetchone()
            self._conn.executemany(
                "INSERT INTO fixloop_job_events (job_id, seq, time, event, text, data_json) VALUES (?,?,?,?,?,?)",
                [(job_id, last + i + 1, now, line.event, line.text, json.dumps(line.data, default=str))
                 for i, line in enumerate(lines)])

    def events(self, job_id: str, after: int = 0) -> list[StoredEvent]:
        with self._lock:
            rows = self._conn.execute("SELECT seq, time, event, text, data_json FROM fixloop_job_events "
                                      "WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after)).fetchall()
        return [StoredEvent(seq=r[0], time=r[1], event=r[2], text=r[3], data=json.loads(r[4])) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM fixloop_jobs GROUP BY status").fetchall()
        return {status: count for status, count in rows}


# ---- finishing a cancelled run ------------------------------------------------------------------


def cancel_run(run_id: str, db: str | Path | None = None, progress: Callable[..., None] | None = None,
               reason: str = CANCELLED_REASON) -> "RunState | None":
    """Stop a run that is not going on in any process (stopped at a cancel point, paused for approval,
    interrupted) and deliver what it has, as the finish node would: the final image (the best so
    far), ``report.json`` and ``review.png``, with ``reason`` as the stop reason. An attempt whose
    output was never verified is reported as such and not delivered. None when the run has no
    checkpoint yet."""
    from fixloop.agent.context import RunContext
    from fixloop.agent.outputs import write_outputs
    from fixloop.agent.runner import open_graph
    from fixloop.agent.state import Outcome, RunState

    with open_graph(db) as graph:
        config = {"configurable": {"thread_id": run_id}}
        values = graph.get_state(config).values
        if not values or "run_id" not in values:  # no checkpoint of the run's own state yet
            return None
        state = RunState.model_validate(values)
        if state.finished:
            return state
        not_verified = []
        if state.pending is not None:
            not_verified = [state.pending.model_copy(update={
                "outcome": Outcome.failed, "reason": "not verified: the run was cancelled first"})]
        stop: dict[str, Any] = {"stop_reason": reason, "finished": True, "pending": None, "plan": None, "target": None}
        if "stop" in RunState.model_fields:  # the typed stop reason, where the state has one
            stop["stop"] = _cancelled_stop()
        if state.current_image is None:  # stopped before its first inspection
            stop["current_image"] = state.inputs.image
        ctx = RunContext.open(state.inputs, progress)
        state = state.model_copy(update={**stop, "attempts": [*state.attempts, *not_verified]})
        write_outputs(state, ctx)
        # ``attempts`` accumulates: hand the checkpoint only the attempt it does not have yet
        graph.update_state(config, {**stop, "attempts": not_verified}, as_node="finish")
        ctx.tell("finish", state=state)
        return RunState.model_validate(graph.get_state(config).values)


def _cancelled_stop():
    """``StopReason.cancelled`` where the loop's state has it; None (the text says why) where not."""
    from fixloop.agent import state as run_state

    stops = getattr(run_state, "StopReason", None)
    return getattr(stops, "cancelled", None) if stops is not None else None


def is_cancelled(state: "RunState") -> bool:
    stop = getattr(state, "stop", None)
    return as_text(stop) == "cancelled" or as_text(state.stop_reason).startswith("cancelled")


# ---- one manager per store ------------------------------------------------------------------------

_CLAIMS: dict[str, Any] = {}
_CLAIMS_LOCK = threading.Lock()


def claim_store(db: str | Path) -> None:
    """Hold the store for this process (an advisory lock beside the file, released when the process
    ends, however it ends): two servers on one store would both pick up the same interrupted runs."""
    import fcntl

    path = Path(db).resolve()
    with _CLAIMS_LOCK:
        if str(path) in _CLAIMS:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".jobs.lock"), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise InputError(f"another process runs the jobs of {path}: stop it, or set FIXLOOP_HOME to "
                             "another folder") from None
        _CLAIMS[str(path)] = handle


# ---- the manager --------------------------------------------------------------------------------


def summary_of(state: "RunState") -> dict[str, Any]:
    return {"verdict": state.verdict, "stop_reason": as_text(state.stop_reason) or None,
            "passes": state.spend.passes, "usd": round(state.spend.usd, 6), "seconds": round(state.spend.seconds, 3),
            "backend": state.inputs.backend}


def order_data(order: "RepairOrder") -> dict[str, Any]:
    """A repair order as JSON (its images already written to files: only paths are kept)."""
    data = dataclasses.asdict(order)
    for key, value in data.items():
        if isinstance(value, Path):
            data[key] = str(value)
        elif isinstance(value, (list, tuple)):
            data[key] = [str(v) if isinstance(v, Path) else v for v in value]
        elif isinstance(value, (bytes, bytearray)):
            raise ValueError(f"order field {key!r} holds bytes: write the inputs to files first")
    return data


class JobManager:
    """A fixed pool of worker threads over the job store. ``workers`` runs go on at once; the rest
    wait in the queue. Threads are daemons: a server that stops leaves its runs in their checkpoints,
    and the next :meth:`start` picks them up."""

    def __init__(self, store: JobStore, db: str | Path, workers: int = 1, resume_interrupted: bool = True):
        if workers < 1:
            raise InputError(f"workers must be 1 or more, not {workers}")
        self.store = store
        self.db = Path(db)
        self.workers = workers
        self.resume_interrupted = resume_interrupted
        self._queue: queue.Queue[tuple[str, Callable[[], "RunState | None"]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._working: set[str] = set()
        self._cancel: set[str] = set()

    # -- life cycle

    def start(self) -> None:
        """Start the workers and take up what the last process left (see the module docstring)."""
        claim_store(self.db)
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"fixloop-run-{i + 1}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._recover()

    def stop(self, timeout: float = 0.0) -> None:
        """Let the workers end after their current run (they are daemons: the process need not wait)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def queue_length(self) -> int:
        return self._queue.qsize()

    def busy(self) -> int:
        with self._lock:
            return len(self._working)

    def _recover(self) -> None:
        from fixloop.agent import service

        for job in reversed(self.store.jobs(statuses={JobStatus.queued, JobStatus.running})):
            state = self._state(job.id)
            if job.cancel_requested:
                self._cancel.add(job.id)
                self._enqueue(job.id, lambda job=job: cancel_run(job.id, self.db, self._progress(job.id)))
            elif state is None:  # never reached its first checkpoint: start it (again)
                self._tell(job.id, "restart", "the server restarted before the run began: starting it")
                self._enqueue_start(job)
            elif state.finished or service.waiting_for_approval(job.id, self.db):
                status = run_status(state, not state.finished, working=False)
                self.store.update(job.id, status=status, summary=summary_of(state))
            elif self.resume_interrupted:
                self._tell(job.id, "restart", "the server restarted during the run: resuming it from its "
                                              "last checkpoint (finished steps are not repeated)")
                self._enqueue(job.id, lambda job=job: service.resume_repair(job.id, progress=self._progress(job.id),
                                                                            db=self.db))
            else:
                self._mark_interrupted(job.id)

    def _mark_interrupted(self, job_id: str) -> None:
        message = (f"interrupted: the server stopped during the run; resume it with POST /v1/repairs/{job_id}/resume "
                   f"or `{resume_command(job_id)}`")
        self._tell(job_id, "interrupted", message)
        self.store.update(job_id, status=JobStatus.interrupted, error=message)

    # -- what front ends call

    def submit(self, order: "RepairOrder", owner: str) -> Job:
        """Queue a new run. ``order`` names files only (its run_id and out set); returns the job."""
        if order.run_id is None or order.out is None:
            raise ValueError("a job's order needs its run_id and out folder")
        job = self.store.create(order.run_id, owner, order_data(order))
        self._enqueue_start(job)
        return job

    def resume(self, job_id: str) -> Job:
        """Resume an interrupted run."""
        from fixloop.agent import service

        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status != JobStatus.interrupted:
                raise JobConflict(f"run {job_id!r} is {job.status.value if job else 'unknown'}: only an "
                                  "interrupted run can be resumed")
            self.store.update(job_id, status=JobStatus.queued, error=None)
        self._enqueue(job_id, lambda: service.resume_repair(job_id, progress=self._progress(job_id), db=self.db))
        return self.store.get(job_id)

    def answer(self, job_id: str, approve: bool) -> Job:
        """Answer the paid call a run waits on; the run goes on in a worker."""
        from fixloop.agent import service

        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status != JobStatus.waiting_approval or not service.waiting_for_approval(job_id, self.db):
                raise JobConflict(f"run {job_id!r} is not waiting for an approval"
                                  + (f" (it is {job.status.value})" if job else ""))
            self.store.update(job_id, status=JobStatus.queued)
        self._tell(job_id, "approval", "approved: the paid call goes ahead" if approve else "declined: the paid call is skipped")
        self._enqueue(job_id, lambda: service.answer_approval(job_id, approve, progress=self._progress(job_id), db=self.db))
        return self.store.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a run: a queued one never starts; a running one stops at its next step (never in the
        middle of a tool call) and delivers the image so far; a paused or interrupted one is finished
        with what it has. A settled run is left as it is."""
        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status in (JobStatus.done, JobStatus.failed, JobStatus.cancelled):
                return job
            self.store.update(job_id, cancel_requested=True)
            self._cancel.add(job_id)
            working = job_id in self._working
            if job.status == JobStatus.queued and not working and self._state(job_id) is None:
                self.store.update(job_id, status=JobStatus.cancelled)
                self._tell(job_id, "cancelled", "cancelled before it started")
                return self.store.get(job_id)
        if not working and job.status in (JobStatus.waiting_approval, JobStatus.interrupted):
            self.store.update(job_id, status=JobStatus.queued)
            self._enqueue(job_id, lambda: cancel_run(job_id, self.db, self._progress(job_id)))
        self._tell(job_id, "cancel", "cancel requested: the run stops at its next step" if working or
                   job.status != JobStatus.waiting_approval else "cancel requested: the paused run is finished "
                   "with the image so far")
        return self.store.get(job_id)

    # -- workers

    def _enqueue_start(self, job: Job) -> None:
        from fixloop.agent import service

        def start() -> "RunState":
            order = service.RepairOrder(**job.order)
            return service.start_repair(order, progress=self._progress(job.id), db=self.db)

        self._enqueue(job.id, start)

    def _enqueue(self, job_id: str, work: Callable[[], "RunState | None"]) -> None:
        self._queue.put((job_id, work))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, work = item
            try:
                self._run(job_id, work)
            except Exception:  # noqa: BLE001 - a worker must outlive any one job
                log.exception("job %s: bookkeeping failed", job_id)

    def _run(self, job_id: str, work: Callable[[], "RunState | None"]) -> None:
        from fixloop.agent import service

        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status in (JobStatus.cancelled, JobStatus.done, JobStatus.failed):
                return
            self._working.add(job_id)
            self.store.update(job_id, status=JobStatus.running)
        try:
            try:
                state = work()
            except RunCancelled:
                state = cancel_run(job_id, self.db, self._progress(job_id))
            if state is None:  # cancelled before its first checkpoint
                self._finish(job_id, JobStatus.cancelled, None)
                return
            waiting = not state.finished and service.waiting_for_approval(job_id, self.db) is not None
            status = run_status(state, waiting, working=False)
            if job_id in self._cancel and status == JobStatus.waiting_approval:
                state = cancel_run(job_id, self.db, self._progress(job_id))
                status = JobStatus.cancelled
            elif job_id in self._cancel and state.finished:
                status = JobStatus.cancelled if is_cancelled(state) else status
            self._finish(job_id, status, state)
        except InputError as exc:
            self._fail(job_id, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported as the job's failure, logged with its traceback
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"the run failed: {type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            with self._lock:
                self._working.discard(job_id)
                # a cancel that came while this worker was finishing: the run now waits, so finish it here
                job = self.store.get(job_id)
                again = (job is not None and job_id in self._cancel
                         and job.status in (JobStatus.waiting_approval, JobStatus.interrupted))
                if again:
                    self.store.update(job_id, status=JobStatus.queued)
            if again:
                self._enqueue(job_id, lambda: cancel_run(job_id, self.db, self._progress(job_id)))

    def _finish(self, job_id: str, status: JobStatus, state: "RunState | None") -> None:
        values: dict[str, Any] = {"status": status}
        if state is not None:
            values["summary"] = summary_of(state)
        if status == JobStatus.interrupted:
            self._mark_interrupted(job_id)
            values.pop("status")
        self.store.update(job_id, **values)
        if status == JobStatus.waiting_approval:
            from fixloop.agent import service

            question = service.waiting_for_approval(job_id, self.db) or {}
            self._tell(job_id, "waiting_approval", f"waiting for approval: {question.get('question', 'a paid call')} "
                                                   f"about ${float(question.get('estimated_usd', 0)):.4f}", question)
        elif status == JobStatus.cancelled and state is None:
            self._tell(job_id, "cancelled", "cancelled before it started")

    def _fail(self, job_id: str, message: str) -> None:
        self._tell(job_id, "failed", f"failed: {message}")
        self.store.update(job_id, status=JobStatus.failed, error=message)
        job = self.store.get(job_id)
        if job is not None and self._state(job_id) is None:
            _remove_run_folder(job.out_dir)  # nothing ran: the uploaded inputs are not kept

    # -- progress

    def _progress(self, job_id: str) -> Callable[..., None]:
        def progress(event: str, **data: Any) -> None:
            try:
                self.store.add_events(job_id, describe(event, **data))
            except Exception:  # noqa: BLE001 - a progress line must never end a run
                log.exception("job %s: could not store the %s event", job_id, event)
            if event in CANCEL_POINTS and job_id in self._cancel:
                raise RunCancelled(job_id)

        return progress

    def _tell(self, job_id: str, event: str, text: str, data: dict[str, Any] | None = None) -> None:
        self.store.add_events(job_id, [ProgressLine(event, text, dict(data or {}))])

    def _state(self, job_id: str) -> "RunState | None":
        from fixloop.agent.runner import RunNotFound, load_run

        try:
            return load_run(job_id, self.db)
        except RunNotFound:
            return None

    # -- reading

    def state(self, job_id: str) -> "RunState | None":
        """The run's checkpointed state (None before its first checkpoint)."""
        return self._state(job_id)

    def working(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._working


def _remove_run_folder(folder: Path) -> None:
    if folder.is_dir() and not (folder / "report.json").exists():
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(store: JobStore, job_id: str, statuses: set[JobStatus], timeout: float = 60.0,
             interval: float = 0.1) -> Job:
    """Poll until the job reaches one of ``statuses`` (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.get(job_id)
        if job is not None and job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job.status.value if job else 'missing'} after {timeout:.0f} s")
        time.sleep(interval)
