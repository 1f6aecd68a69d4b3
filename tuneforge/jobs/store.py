"""The jobs API's state in the server's database: uploaded files, fine-tuning jobs, their events and checkpoints.

Tables are declared on `tuneforge.db.TableBase`; `Store(url)` connects (creating what is missing) and owns every
state transition. A job moves `validating_files → queued → running → succeeded | failed | cancelled`, and
`running → paused → queued` (pause, resume). Each transition is ONE conditional UPDATE
(`... WHERE id = :id AND status IN (...)`), so when two processes race on a job exactly one wins: the row count
says which. Nothing is read-then-written.

Workers claim a job by writing their id and a lease expiry into its row (`claim_next`) and renew the lease while
they train (`heartbeat`). A job left in `running` with an expired lease belongs to a worker that died: the next
claim takes it over and the worker resumes it from its last checkpoint; after MAX_RESTARTS such take-overs the
job fails with code `worker_lost` instead (a job that kills its worker every time must not loop forever).
A worker that stops (pause, cancel, shutdown) clears its id from the row (`release`), which is also what lets a
resumed job be claimed again: the old worker must have let go before a new one may write into the run directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, and_, delete, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db import TableBase, connect, session_factory
from tuneforge.ids import new_id
from tuneforge.paths import home

VALIDATING, QUEUED, RUNNING, PAUSED = "validating_files", "queued", "running", "paused"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE = (VALIDATING, QUEUED, RUNNING, PAUSED)  # not finished: its files must stay
MAX_RESTARTS = 3  # take-overs of a job whose worker died, before it fails with `worker_lost`

def storage_root(db_url: str) -> Path:
    """Where uploads (`files/`) and job run directories (`runs/`) live: beside a SQLite database file, else in
    $TUNEFORGE_HOME (PostgreSQL: every worker must see this directory, e.g. on a shared disk)."""
    if db_url.startswith("sqlite:///") and db_url != "sqlite:///:memory:":
        return Path(db_url.removeprefix("sqlite:///")).expanduser().resolve().parent
    return home()


# --- tables ---------------------------------------------------------------------------------------------------
class FileRow(TableBase):
    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # list order
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))  # the client's name, for display only (never a path)
    bytes: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))


class JobRow(TableBase):
    __tablename__ = "fine_tuning_jobs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(Text)  # the served base name the client asked for
    base: Mapped[str] = mapped_column(Text)  # what training loads (alias, directory or hub id)
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    user_metadata: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    hyperparameters: Mapped[dict] = mapped_column(JSON)  # as asked ("auto" allowed), then as resolved
    options: Mapped[dict] = mapped_column(JSON)  # the `tuneforge` extras (TrainConfig keys)
    status: Mapped[str] = mapped_column(String(32), index=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_files: Mapped[list] = mapped_column(JSON, default=list)
    n_examples: Mapped[int | None] = mapped_column(Integer, nullable=True)  # valid rows of training_file
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)


class EventRow(TableBase):
    __tablename__ = "fine_tuning_job_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class CheckpointRow(TableBase):
    __tablename__ = "fine_tuning_job_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(Text)


class InvalidState(Exception):
    """The job is not in a state that allows the action (cancel a finished job, resume a running one)."""

    def __init__(self, job_id: str, status: str, action: str):
        super().__init__(f"Job {job_id} is {status}: cannot {action} it")
        self.job_id, self.status, self.action = job_id, status, action


@dataclass
class Page:
    rows: list
    has_more: bool


def _now() -> int:
    return int(time.time())


def _event(job_id: str, message: str, *, level: str = "info", type: str = "message",
           data: dict | None = None) -> EventRow:
    """One job event row, to add in the transaction that caused it (or on its own: `Store.add_event`)."""
    return EventRow(id=new_id("ftevent"), job_id=job_id, created_at=_now(), level=level, message=message,
                    type=type, data=data)


class Store:
    """One database, shared by the server and every worker; every method is its own short transaction."""

    def __init__(self, url: str):
        self.url = url
        self.engine = connect(url)
        self.Session = session_factory(self.engine)
        self.root = storage_root(url)

    # --- files ---
    def add_file(self, **fields) -> FileRow:
        row = FileRow(created_at=_now(), **fields)
        with self.Session.begin() as s:
            s.add(row)
        return row

    def get_file(self, file_id: str) -> FileRow | None:
        with self.Session() as s:
            return s.scalar(select(FileRow).where(FileRow.id == file_id))

    def list_files(self, *, after: str | None, limit: int, order: str = "desc",
                   purpose: str | None = None) -> Page:
        q = select(FileRow)
        if purpose:
            q = q.where(FileRow.purpose == purpose)
        return self._page(q, FileRow, after, limit, descending=order == "desc")

    def file_ids(self) -> set[str]:
        with self.Session() as s:
            return set(s.scalars(select(FileRow.id)))

    def file_in_use(self, file_id: str) -> str | None:
        """The id of an unfinished job that trains on this file (deleting it would break the job's resume)."""
        with self.Session() as s:
            return s.scalar(select(JobRow.id).where(
                JobRow.status.in_(ACTIVE),
                or_(JobRow.training_file == file_id, JobRow.validation_file == file_id)).limit(1))

    def delete_file(self, file_id: str) -> bool:
        with self.Session.begin() as s:
            return s.execute(delete(FileRow).where(FileRow.id == file_id)).rowcount == 1

    # --- jobs ---
    def create_job(self, **fields) -> JobRow:
        row = JobRow(id=new_id("ftjob"), created_at=_now(), status=VALIDATING, restarts=0, result_files=[],
                     **fields)
        with self.Session.begin() as s:
            s.add(row)
            s.flush()  # the job row first: its event's foreign key points at it
            s.add(_event(row.id, f"Created fine-tuning job: {row.id}"))
        return row

    def get_job(self, job_id: str) -> JobRow | None:
        with self.Session() as s:
            return s.scalar(select(JobRow).where(JobRow.id == job_id))

    def list_jobs(self, *, after: str | None, limit: int, metadata: dict[str, str] | None = None) -> Page:
        if not metadata:
            return self._page(select(JobRow), JobRow, after, limit, descending=True)
        everything = self._page(select(JobRow), JobRow, after, None, descending=True).rows
        match = [j for j in everything if all((j.user_metadata or {}).get(k) == v for k, v in metadata.items())]
        return Page(match[:limit], len(match) > limit)

    def jobs_in(self, *statuses: str) -> list[JobRow]:
        with self.Session() as s:
            return list(s.scalars(select(JobRow).where(JobRow.status.in_(statuses)).order_by(JobRow.seq)))

    def _set(self, job_id: str, where, *, event: str | None = None, level: str = "info", **values) -> bool:
        """The one way a job row changes: UPDATE ... WHERE id AND `where`; True when this call changed it.
        `event` is written in the same transaction, only when the row changed: a client that sees the new
        status also sees why (two transactions let a poller read `queued` before its event existed)."""
        with self.Session.begin() as s:
            ok = s.execute(update(JobRow).where(JobRow.id == job_id, where).values(**values)).rowcount == 1
            if ok and event is not None:
                s.add(_event(job_id, event, level=level))
            return ok

    def validated(self, job_id: str, n_examples: int) -> bool:
        return self._set(job_id, JobRow.status == VALIDATING, status=QUEUED, n_examples=n_examples,
                         event="Files validated, moving job to queued state")

    def fail(self, job_id: str, code: str, message: str, param: str | None = None, *,
             worker_id: str | None = None, from_status: tuple[str, ...] = (VALIDATING, RUNNING)) -> bool:
        """Fail an unfinished job; with `worker_id`, only while that worker still holds it."""
        where = JobRow.status.in_(from_status)
        if worker_id is not None:
            where = and_(where, JobRow.worker_id == worker_id)
        return self._set(job_id, where, status=FAILED, finished_at=_now(), estimated_finish=None,
                         error={"code": code, "message": message, "param": param}, worker_id=None,
                         lease_expires_at=None, event=f"Fine-tuning job failed: {message}", level="error")

    def cancel(self, job_id: str) -> JobRow:
        """Cancelled at once; a worker training it stops at its next step (it checks `control`)."""
        if not self._set(job_id, JobRow.status.in_(ACTIVE), status=CANCELLED, finished_at=_now(),
                         estimated_finish=None, event="Fine-tuning job cancelled"):
            raise self._invalid(job_id, "cancel")
        return self.get_job(job_id)

    def pause(self, job_id: str) -> JobRow:
        """A running job's worker checkpoints at its next step and lets go; `resume` queues it again."""
        if not self._set(job_id, JobRow.status == RUNNING, status=PAUSED, estimated_finish=None,
                         event="Fine-tuning job paused"):
            raise self._invalid(job_id, "pause")
        return self.get_job(job_id)

    def resume(self, job_id: str) -> JobRow:
        if not self._set(job_id, JobRow.status == PAUSED, status=QUEUED,
                         event="Fine-tuning job resumed, moving job to queued state"):
            raise self._invalid(job_id, "resume")
        return self.get_job(job_id)

    def _invalid(self, job_id: str, action: str) -> Exception:
        job = self.get_job(job_id)
        return KeyError(job_id) if job is None else InvalidState(job_id, job.status, action)

    # --- workers ---
    def claim_next(self, worker_id: str, lease_seconds: float) -> JobRow | None:
        """Take the oldest job waiting for a worker, or a running one whose worker's lease has expired.
        Returns it (status `running`, held by `worker_id`), or None when there is nothing to do."""
        while True:
            now = time.time()
            free = or_(JobRow.worker_id.is_(None), JobRow.lease_expires_at < now)
            waiting = and_(JobRow.status == QUEUED, free)
            orphaned = and_(JobRow.status == RUNNING, JobRow.lease_expires_at < now)
            with self.Session() as s:
                candidates = list(s.execute(select(JobRow.id, JobRow.status, JobRow.restarts)
                                            .where(or_(waiting, orphaned)).order_by(JobRow.seq).limit(8)))
            if not candidates:
                return None
            for job_id, status, restarts in candidates:
                if status == RUNNING and restarts >= MAX_RESTARTS:
                    if self.fail(job_id, "worker_lost", f"the worker training this job stopped responding "
                                 f"{restarts + 1} times; not restarting it again", from_status=(RUNNING,)):
                        continue
                was = waiting if status == QUEUED else orphaned
                takeover = (f"The previous worker stopped responding; {worker_id} takes the job over from its "
                            "last checkpoint") if status == RUNNING else None
                if self._set(job_id, was, status=RUNNING, worker_id=worker_id, lease_expires_at=now + lease_seconds,
                             restarts=JobRow.restarts + int(status == RUNNING), event=takeover, level="warn"):
                    return self.get_job(job_id)
            # every candidate was taken by someone else meanwhile: look again

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the job is no longer this worker's (taken over after a stall)."""
        return self._set(job_id, JobRow.worker_id == worker_id, lease_expires_at=time.time() + lease_seconds)

    def control(self, job_id: str) -> tuple[str, str | None]:
        """(status, worker_id) — what a training worker checks between steps."""
        with self.Session() as s:
            row = s.execute(select(JobRow.status, JobRow.worker_id).where(JobRow.id == job_id)).one()
            return row[0], row[1]

    def update_running(self, job_id: str, holder: str, **values: Any) -> bool:
        """Change a running job's row, only while `holder` holds it."""
        return self._set(job_id, and_(JobRow.worker_id == holder, JobRow.status == RUNNING), **values)

    def succeed(self, job_id: str, holder: str, **values: Any) -> bool:
        """running → succeeded, only if `holder` still holds the job and nobody cancelled or paused it."""
        return self.update_running(job_id, holder, status=SUCCEEDED, finished_at=_now(), estimated_finish=None,
                                   worker_id=None, lease_expires_at=None, **values)

    def release(self, job_id: str, worker_id: str, *, requeue: bool = False) -> None:
        """The worker lets go of the job; with requeue, a still-running job goes back to the queue (shutdown)."""
        if requeue:
            self._set(job_id, and_(JobRow.worker_id == worker_id, JobRow.status == RUNNING), status=QUEUED)
        self._set(job_id, JobRow.worker_id == worker_id, worker_id=None, lease_expires_at=None,
                  estimated_finish=None)

    # --- events and checkpoints ---
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict | None = None) -> None:
        with self.Session.begin() as s:
            s.add(_event(job_id, message, level=level, type=type, data=data))

    def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page:
        return self._page(select(EventRow).where(EventRow.job_id == job_id), EventRow, after, limit,
                          descending=True)

    def add_checkpoint(self, job_id: str, step: int, metrics: dict, model_name: str) -> None:
        with self.Session.begin() as s:
            s.add(CheckpointRow(id=new_id("ftckpt"), job_id=job_id, created_at=_now(), step_number=step,
                                metrics=metrics, fine_tuned_model_checkpoint=model_name))

    def checkpoint_steps(self, job_id: str) -> set[int]:
        with self.Session() as s:
            return set(s.scalars(select(CheckpointRow.step_number).where(CheckpointRow.job_id == job_id)))

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> Page:
        return self._page(select(CheckpointRow).where(CheckpointRow.job_id == job_id), CheckpointRow, after,
                          limit, descending=True)

    # --- paging ---
    def _page(self, q, table, after: str | None, limit: int | None, *, descending: bool) -> Page:
        """Rows in `seq` order after the row with id `after` (a cursor); has_more when another page exists.
        An unknown cursor raises KeyError (the API answers 404 naming `after`)."""
        with self.Session() as s:
            if after is not None:
                seq = s.scalar(select(table.seq).where(table.id == after))
                if seq is None:
                    raise KeyError(after)
                q = q.where(table.seq < seq if descending else table.seq > seq)
            q = q.order_by(table.seq.desc() if descending else table.seq)
            if limit is not None:
                q = q.limit(limit + 1)
            rows = list(s.scalars(q))
        if limit is None:
            return Page(rows, False)
        return Page(rows[:limit], len(rows) > limit)
