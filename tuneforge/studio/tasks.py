"""Background tasks for the studio routes that take minutes (eval, export): bounded, polled, never lost silently.

`TaskRunner(max_pending=8, keep=100)`: one worker thread runs tasks in order (evaluation and export each use
every core; two at once would only be slower), at most `max_pending` waiting or running (a new one beyond that
is refused: the route answers 429), and the last `keep` finished ones are remembered for polling. The results
themselves are files in the run (eval.json, exports/FORMAT/manifest.json), so a restarted server loses the task
list, not the work.

Task objects (`to_dict`) read like OpenAI's long-running objects: `{"id": "task-…", "object": "tuneforge.task",
"kind", "status": queued|running|succeeded|failed, "created_at", "started_at", "finished_at", "params",
"result", "error": {"code", "message"} | null}`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("tuneforge.studio")

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


@dataclass
class Task:
    id: str
    kind: str
    params: dict
    status: str = QUEUED
    created_at: int = field(default_factory=lambda: int(time.time()))
    started_at: int | None = None
    finished_at: int | None = None
    result: dict | None = None
    error: dict | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "object": "tuneforge.task", "kind": self.kind, "status": self.status,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "params": self.params, "result": self.result, "error": self.error}


class Busy(Exception):
    """Too many tasks waiting: try again later (429)."""


class TaskRunner:
    def __init__(self, max_pending: int = 8, keep: int = 100):
        self.max_pending, self.keep = max_pending, keep
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneforge-studio")

    def submit(self, kind: str, params: dict, fn: Callable[[], dict]) -> Task:
        with self._lock:
            pending = sum(t.status in (QUEUED, RUNNING) for t in self._tasks.values())
            if pending >= self.max_pending:
                raise Busy(pending)
            task = Task(f"task-{secrets.token_hex(12)}", kind, params)
            self._tasks[task.id] = task
            self._forget_old()
        self._pool.submit(self._run, task, fn)
        return task

    def _run(self, task: Task, fn: Callable[[], dict]) -> None:
        task.status, task.started_at = RUNNING, int(time.time())
        try:
            task.result = fn()
            task.status = SUCCEEDED
        except Exception as e:  # noqa: BLE001 - the task fails with the reason; the server goes on
            from tuneforge.errors import TuneforgeError

            if not isinstance(e, TuneforgeError):
                log.exception("studio task %s (%s) failed", task.id, task.kind)
            task.error = {"code": getattr(e, "code", None) or type(e).__name__,
                          "message": str(e).splitlines()[0] if str(e) else type(e).__name__}
            task.status = FAILED
        finally:
            task.finished_at = int(time.time())

    def _forget_old(self) -> None:
        done = [k for k, t in self._tasks.items() if t.status in (SUCCEEDED, FAILED)]
        for k in done[:max(0, len(done) - self.keep)]:
            del self._tasks[k]

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def list(self) -> list[Task]:
        return list(reversed(self._tasks.values()))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
