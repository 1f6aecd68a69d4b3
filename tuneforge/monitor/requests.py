"""The request log: every generation request the server answers, as one row in the server's database.

The server hands each answered request (a `serve.completions.RequestRecord`) to `RequestLog.hook` on the event
loop; the hook only puts it on a bounded queue, so logging never blocks generation. One writer thread turns
records into rows (redaction, hashing) and inserts them in batches, one transaction per batch. `close()` (run
by the app's shutdown, `monitor.attach`) drains the queue, so a clean shutdown loses no row. If the database
falls so far behind that the queue fills up (`queue_size` records), new records are dropped and counted
(`dropped`, exported as `tuneforge_request_log_dropped`) rather than slowing answers down.

Content (`--log-content`): `full` keeps the prompt (as sent, JSON) and completion text after redaction; `hash`
keeps only their sha256 and lengths (drift then has lengths and output-side signals, not tokens or embeddings).
Retention (`--log-max-rows`, `--log-max-days`): the writer deletes the oldest rows (and their feedback) beyond
the limits once a minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text, delete, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db import TableBase
from tuneforge.errors import ConfigError
from tuneforge.monitor.redact import Redactor, redact_content, redact_pii

log = logging.getLogger("tuneforge.monitor")

CONTENT_MODES = ("full", "hash")
RETENTION_EVERY_S = 60.0


class RequestRow(TableBase):
    """One answered generation request (table `request_log`). `id` is the response id the client got."""

    __tablename__ = "request_log"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created: Mapped[float] = mapped_column(Float, index=True)  # unix time of arrival
    endpoint: Mapped[str] = mapped_column(String(32))  # chat.completions | completions
    model: Mapped[str | None] = mapped_column(String(256), index=True)  # served name (adapter or base)
    status: Mapped[int] = mapped_column(Integer, index=True)  # HTTP status answered
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    n_choices: Mapped[int] = mapped_column(Integer, default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # of the first choice
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)  # all choices
    queue_time_s: Mapped[float | None] = mapped_column(Float)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    latency_s: Mapped[float] = mapped_column(Float)
    content: Mapped[str] = mapped_column(String(8))  # full | hash: what the two text columns hold
    prompt: Mapped[str | None] = mapped_column(Text)  # JSON of the messages / prompt as sent (full only)
    completion: Mapped[str | None] = mapped_column(Text)  # first choice's text (full only)
    other_completions: Mapped[str | None] = mapped_column(Text)  # JSON list of choices 1.. (full, n > 1)
    prompt_sha256: Mapped[str | None] = mapped_column(String(64))
    completion_sha256: Mapped[str | None] = mapped_column(String(64))
    prompt_chars: Mapped[int] = mapped_column(Integer, default=0)
    completion_chars: Mapped[int] = mapped_column(Integer, default=0)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def prompt_text(prompt: Any) -> str:
    """The text of a prompt as sent: message contents joined by newlines, or the prompt string(s)."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        parts = []
        for x in prompt:
            if isinstance(x, dict):
                c = x.get("content")
                if isinstance(c, list):
                    c = "".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
                parts.append(c if isinstance(c, str) else "")
            elif isinstance(x, str):
                parts.append(x)
        return "\n".join(parts)
    return ""


def record_to_row(rec, *, content: str = "full", redact: Redactor = redact_pii, now: float | None = None) -> dict:
    """A RequestRecord (serve.completions) → the column values of its request_log row."""
    prompt = redact_content(rec.prompt, redact) if rec.prompt is not None else None
    completions = [redact(c) for c in (rec.completions or [])]
    ptext = prompt_text(prompt)
    first = completions[0] if completions else ""
    latency = rec.latency_s if rec.latency_s else max(0.0, (now or time.time()) - rec.created)
    row = dict(id=rec.id, created=rec.created, endpoint=rec.endpoint, model=rec.model, status=int(rec.status),
               error=rec.error, error_type=rec.error_type, stream=bool(rec.stream), cached=bool(rec.cached),
               n_choices=len(completions), finish_reason=(rec.finish_reasons or [None])[0],
               prompt_tokens=int(rec.prompt_tokens or 0), completion_tokens=int(rec.completion_tokens or 0),
               queue_time_s=rec.queue_time_s, ttft_s=rec.ttft_s, latency_s=float(latency), content=content,
               prompt_sha256=_sha(ptext) if prompt is not None else None,
               completion_sha256=_sha(first) if completions else None,
               prompt_chars=len(ptext), completion_chars=len(first), prompt=None, completion=None,
               other_completions=None)
    if content == "full":
        row["prompt"] = json.dumps(prompt, ensure_ascii=False) if prompt is not None else None
        row["completion"] = first if completions else None
        row["other_completions"] = json.dumps(completions[1:], ensure_ascii=False) if len(completions) > 1 else None
    return row


@dataclass
class LogStats:
    queued: int = 0
    written: int = 0
    dropped: int = 0  # queue full, or the database refused the batch three times


class RequestLog:
    """The writer: `hook(rec)` from the server, rows into `engine` (a SQLAlchemy engine from `db.connect`).

    max_rows / max_age_days: retention limits (None = keep everything)."""

    def __init__(self, engine, *, content: str = "full", redact: Redactor = redact_pii, queue_size: int = 10000,
                 batch_size: int = 256, max_rows: int | None = None, max_age_days: float | None = None,
                 start: bool = True):
        if content not in CONTENT_MODES:
            raise ConfigError(f"--log-content {content}: expected one of {', '.join(CONTENT_MODES)}")
        if max_rows is not None and max_rows < 1:
            raise ConfigError(f"--log-max-rows {max_rows}: must be at least 1")
        if max_age_days is not None and max_age_days <= 0:
            raise ConfigError(f"--log-max-days {max_age_days}: must be positive")
        self.engine, self.content, self.redact = engine, content, redact
        self.batch_size, self.max_rows, self.max_age_days = batch_size, max_rows, max_age_days
        self.stats = LogStats()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._pending: dict[str, int] = {}  # ids queued and not yet committed (feedback waits for these)
        self._lock = threading.Condition()
        self._closed = False
        self._failed = 0  # records given up on after retries (counted in stats.dropped too)
        self._last_retention = 0.0
        self._thread = threading.Thread(target=self._run, name="tuneforge-request-log", daemon=True)
        if start:
            self.start()

    # --- the server side (event loop): must return at once ---------------------------------------------------
    def hook(self, rec) -> None:
        if self._closed:
            return
        with self._lock:  # counted before the writer can see it, so flush() and is_pending() never miss it
            self.stats.queued += 1
            self._pending[rec.id] = self._pending.get(rec.id, 0) + 1
        try:
            self._queue.put_nowait((rec, time.time()))
        except queue.Full:
            with self._lock:
                self.stats.queued -= 1
                self._unpend(rec.id)
                self.stats.dropped += 1
                dropped = self.stats.dropped
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("request log queue full: %d record(s) dropped so far (database too slow?)", dropped)

    def _unpend(self, request_id: str) -> None:
        n = self._pending.get(request_id, 0) - 1
        if n > 0:
            self._pending[request_id] = n
        else:
            self._pending.pop(request_id, None)

    def is_pending(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._pending

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self.stats.queued
            while self.stats.written + self._failed < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._lock.wait(timeout=0.1 if left is None else min(left, 0.1))
        return True

    def start(self) -> None:
        if not self._thread.is_alive() and not self._closed:
            self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking records, write every queued one, stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()  # never started: drain now
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("request log: writer still busy after %.0f s at shutdown; %d record(s) unwritten",
                      timeout, self._queue.qsize())

    # --- the writer thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        done = False
        while not done:
            try:
                item = self._queue.get(timeout=RETENTION_EVERY_S / 4)
            except queue.Empty:
                self._retention()
                continue
            batch = []
            while True:
                if item is None:
                    done = True
                else:
                    batch.append(item)
                if done or len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            self._retention()

    def _write(self, batch: list) -> None:
        rows = []
        for rec, seen in batch:
            try:
                rows.append(record_to_row(rec, content=self.content, redact=self.redact, now=seen))
            except Exception:  # noqa: BLE001 - one bad record (a redactor failing on it) must not stop the log
                log.exception("request log: cannot turn request %s into a row", getattr(rec, "id", "?"))
        ok = False
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    if rows:
                        conn.execute(insert(RequestRow), rows)
                ok = True
                break
            except Exception:  # noqa: BLE001 - a locked or full database: retry, then count the loss
                log.exception("request log: writing %d row(s) failed (attempt %d of 3)", len(rows), attempt + 1)
                time.sleep(0.5 * (attempt + 1))
        with self._lock:
            written = len(rows) if ok else 0
            lost = len(batch) - written
            self.stats.written += written
            self.stats.dropped += lost
            self._failed += lost
            for rec, _ in batch:
                self._unpend(rec.id)
            self._lock.notify_all()

    def _retention(self) -> None:
        if self.max_rows is None and self.max_age_days is None:
            return
        now = time.time()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        try:
            apply_retention(self.engine, max_rows=self.max_rows, max_age_days=self.max_age_days, now=now)
        except Exception:  # noqa: BLE001 - retention failing must not stop logging
            log.exception("request log: retention failed")


def apply_retention(engine, *, max_rows: int | None = None, max_age_days: float | None = None,
                    now: float | None = None) -> int:
    """Delete rows older than max_age_days and beyond the newest max_rows; their feedback goes with them
    (ON DELETE CASCADE). Returns the number of request rows deleted."""
    now = time.time() if now is None else now
    deleted = 0
    with engine.begin() as conn:
        if max_age_days is not None:
            deleted += conn.execute(delete(RequestRow).where(RequestRow.created < now - max_age_days * 86400)
                                    ).rowcount or 0
        if max_rows is not None:
            total = conn.execute(select(func.count()).select_from(RequestRow)).scalar_one()
            if total > max_rows:
                cutoff = conn.execute(select(RequestRow.created).order_by(RequestRow.created.desc())
                                      .offset(max_rows - 1).limit(1)).scalar_one()
                deleted += conn.execute(delete(RequestRow).where(RequestRow.created < cutoff)).rowcount or 0
    return deleted
