"""The video jobs' rows (``jobs_t``): every SQL statement of the job queue in one place.

A job is IN_PROGRESS from its submission until it ends (SUCCEEDED, FAILED, CANCELLED); it is
waiting while ``started_at`` is null. ``owner`` is the process that runs it (``host:pid``;
``host:`` for jobs a process of that host released at its shutdown); ``cancel_requested``
asks the owning process, through the database, to stop it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, func, insert, select, update

from facesearch.errors import JobNotFoundError
from facesearch.media.video_job import TERMINAL, JobStatus, VideoJob, job_from_row, page_args
from facesearch.storage.schema import jobs_t
from facesearch.storage.store import Store
from facesearch.types import Caller

_RUNNING = JobStatus.IN_PROGRESS.value


def owner_token() -> str:
    """Who runs a job: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def released_token() -> str:
    """The owner of the jobs a process of this host left at its shutdown: ``host:`` (no
    process). Only processes of this host take them again, since an uploaded input is in this
    host's data directory."""
    return f"{socket.gethostname()}:"


def owner_alive(owner: str | None) -> bool:
    """Whether the process ``owner`` names may still run its jobs (another host's: assumed)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class JobTable:
    """The rows of the video jobs of one store; ``case_of`` confines a case-bound caller to
    its case's jobs (others are "not found" to it)."""

    def __init__(self, store: Store, clock: Callable[[], float],
                 case_of: Callable[[Caller | None], str | None]) -> None:
        self.store = store
        self.clock = clock
        self.case_of = case_of

    # -- reading -------------------------------------------------------------------------

    def row(self, job_id: str, caller: Caller | None = None) -> object:
        """The job's row; a job of another case is "not found" to a case-bound ``caller``."""
        case = self.case_of(caller)
        with self.store.transaction() as conn:
            r = conn.execute(select(jobs_t).where(jobs_t.c.job_id == job_id)).first()
        if r is None or (case is not None and r.caller_case != case):
            raise JobNotFoundError(f"video job {job_id!r} does not exist")
        return r

    def page(self, status: JobStatus | None, limit: int, next_token: str | None,
             caller: Caller | None) -> tuple[list[VideoJob], str | None]:
        """Jobs, newest first, a page at a time (a case-bound ``caller``: its case's only)."""
        offset = page_args(limit, next_token)
        q = select(jobs_t).order_by(jobs_t.c.id.desc()).limit(limit + 1).offset(offset)
        if status is not None:
            q = q.where(jobs_t.c.status == status.value)
        case = self.case_of(caller)
        if case is not None:
            q = q.where(jobs_t.c.caller_case == case)
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
        nxt = str(offset + limit) if len(rows) > limit else None
        return [job_from_row(r) for r in rows[:limit]], nxt

    def by_token(self, token: str) -> tuple[str, str] | None:
        """``(job id, kind)`` of the job submitted with client request token ``token``."""
        with self.store.transaction() as conn:
            prior = conn.execute(select(jobs_t.c.job_id, jobs_t.c.kind)
                                 .where(jobs_t.c.client_token == token)).first()
        return None if prior is None else (str(prior.job_id), str(prior.kind))

    def waiting(self) -> int:
        """How many jobs wait to start."""
        with self.store.transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs_t).where(
                jobs_t.c.status == _RUNNING, jobs_t.c.started_at.is_(None))).scalar_one())

    def parked(self, actor: str) -> list[tuple[Path, bool]]:
        """``(input path, whether the service owns it)`` of ``actor``'s waiting jobs."""
        with self.store.transaction() as conn:
            rows = conn.execute(select(jobs_t.c.input_path, jobs_t.c.owned_input).where(
                jobs_t.c.status == _RUNNING, jobs_t.c.started_at.is_(None),
                jobs_t.c.caller_actor == actor)).all()
        return [(Path(r.input_path), bool(r.owned_input)) for r in rows]

    def running_of(self, actor: str) -> list[str]:
        """The ids of the jobs in progress that ``actor`` submitted."""
        with self.store.transaction() as conn:
            return [r[0] for r in conn.execute(select(jobs_t.c.job_id).where(
                jobs_t.c.caller_actor == actor, jobs_t.c.status == _RUNNING))]

    def ended_input(self, job_id: str) -> Path | None:
        """The service-owned input of an ended job (to delete), else None."""
        with self.store.transaction() as conn:
            r = conn.execute(select(jobs_t.c.input_path, jobs_t.c.owned_input, jobs_t.c.status)
                             .where(jobs_t.c.job_id == job_id)).first()
        if r is not None and r.owned_input and JobStatus(r.status) in TERMINAL:
            return Path(r.input_path)
        return None

    # -- writing -------------------------------------------------------------------------

    def insert(self, **values: object) -> None:
        with self.store.transaction() as conn:
            conn.execute(insert(jobs_t).values(**values))

    def claim(self, job_id: str, owner: str) -> object | None:
        """Mark a waiting job of ``owner`` started (one more attempt); its row, or None when
        it is no longer ``owner``'s to run."""
        now = self.clock()
        with self.store.transaction() as conn:
            n = conn.execute(update(jobs_t).where(
                jobs_t.c.job_id == job_id, jobs_t.c.status == _RUNNING,
                jobs_t.c.owner == owner).values(
                started_at=now, updated_at=now, progress=0.0,
                attempts=jobs_t.c.attempts + 1)).rowcount
            if not n:
                return None
            return conn.execute(select(jobs_t).where(jobs_t.c.job_id == job_id)).first()

    def progress(self, job_id: str, fraction: float) -> bool:
        """Record the fraction (0-1) done; whether a cancellation was requested."""
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                progress=round(99.0 * fraction, 2), updated_at=self.clock()))
            return bool(conn.execute(select(jobs_t.c.cancel_requested)
                                     .where(jobs_t.c.job_id == job_id)).scalar())

    def end(self, job_id: str, status: JobStatus, message: str) -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                status=status.value, status_message=message, finished_at=now, updated_at=now))

    def release(self, job_id: str) -> None:
        """Leave a job stopped by a shutdown to the next process of this host."""
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                owner=released_token(), progress=0.0, updated_at=self.clock(),
                status_message="interrupted by a shutdown; runs again when the service starts"))

    def release_owned(self, owner: str) -> None:
        """Leave every job in progress of ``owner`` to the next process of this host."""
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.owner == owner,
                                              jobs_t.c.status == _RUNNING)
                         .values(owner=released_token(), updated_at=self.clock()))

    def cancel_waiting(self, job_id: str, message: str) -> bool:
        """Cancel a job that has not started; whether it was one."""
        with self.store.transaction() as conn:
            return bool(conn.execute(update(jobs_t).where(
                jobs_t.c.job_id == job_id, jobs_t.c.status == _RUNNING,
                jobs_t.c.started_at.is_(None)).values(
                status=JobStatus.CANCELLED.value, status_message=message,
                finished_at=self.clock(), updated_at=self.clock())).rowcount)

    def request_cancel(self, job_id: str) -> None:
        """Ask the process running the job to stop it."""
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                cancel_requested=1, updated_at=self.clock()))

    def set_notification(self, job_id: str, notification: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                notification=notification))

    def delete(self, job_id: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(delete(jobs_t).where(jobs_t.c.job_id == job_id))

    def recover(self, owner: str, max_attempts: int
                ) -> tuple[list[str], list[str]]:
        """Take over the jobs in progress whose owning process is gone (this host's and those
        without an owner; another host's are left to it): ``(taken, failed)``, the ids of those
        to run again from the start and of those ended (cancel requested, input gone, or
        ``max_attempts`` reached). Of several processes recovering at once, one takes a job."""
        now = self.clock()
        taken: list[str] = []
        failed: list[str] = []
        with self.store.transaction() as conn:
            rows = conn.execute(select(jobs_t).where(jobs_t.c.status == _RUNNING)
                                .order_by(jobs_t.c.id)).all()
            for r in rows:
                if r.owner == owner or owner_alive(r.owner):
                    continue
                values: dict[str, object]
                if r.cancel_requested:
                    values = {"status": JobStatus.CANCELLED.value, "status_message": "cancelled",
                              "finished_at": now}
                elif not Path(r.input_path).is_file():
                    values = {"status": JobStatus.FAILED.value, "finished_at": now,
                              "status_message": "the service restarted and the video input is "
                                                "no longer available"}
                elif r.attempts >= max_attempts:
                    values = {"status": JobStatus.FAILED.value, "finished_at": now,
                              "status_message": f"gave up after {r.attempts} attempts "
                                                f"interrupted by restarts"}
                else:
                    values = {"owner": owner, "progress": 0.0,
                              "status_message": "resumed after a restart (analysed again from "
                                                "the start)"}
                # Compare and set: of two processes recovering at once, one takes the job.
                claimed = conn.execute(
                    update(jobs_t).where(
                        jobs_t.c.id == r.id, jobs_t.c.status == _RUNNING,
                        jobs_t.c.owner.is_(None) if r.owner is None
                        else jobs_t.c.owner == r.owner)
                    .values(updated_at=now, **values)).rowcount
                if claimed == 1:
                    (taken if "owner" in values else failed).append(r.job_id)
        return taken, failed
