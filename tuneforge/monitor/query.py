"""The read side of the monitoring tables, shared by drift, the dashboard and the feedback export.

`--since` takes a duration back from now (`30m`, `24h`, `7d`, `2w`), an ISO date or time (`2025-06-01`,
`2025-06-01T12:00`, UTC unless it names a zone) or unix seconds.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

from sqlalchemy import select

from tuneforge.errors import ConfigError
from tuneforge.monitor.feedback import FeedbackRow
from tuneforge.monitor.requests import RequestRow

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | float | None, *, now: float | None = None, flag: str = "--since") -> float | None:
    """Unix time for a --since value (None → None: everything)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    v = value.strip()
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", v)
    if m:
        return now - float(m.group(1)) * UNITS[m.group(2)]
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag} {value}: expected a duration (30m, 24h, 7d), an ISO date/time "
                          "(2025-06-01T12:00) or unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_duration(value: str, *, flag: str = "--window") -> float:
    """Seconds in `30m`, `24h`, `7d`, `2w` or plain seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", str(value).strip())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{flag} {value}: expected a positive duration (30m, 24h, 7d or seconds)")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def requests(engine, *, since: float | None = None, until: float | None = None, model: str | None = None,
             columns: tuple[str, ...] | None = None, ok_only: bool = False, ids: list[str] | None = None
             ) -> list[dict]:
    """Request-log rows (dicts of columns) in time order, filtered by window, model, (ok_only) status 200
    and (ids) response ids."""
    if ids is None:
        return _requests(engine, since, until, model, columns, ok_only, None)
    chunks = [ids[i:i + 500] for i in range(0, len(ids), 500)]  # bound the IN (...) list
    return [r for c in chunks for r in _requests(engine, since, until, model, columns, ok_only, c)]


def _window(q, created, model_col, since, until, model):
    """Rows created in [since, until) of one model; None leaves that side open."""
    if since is not None:
        q = q.where(created >= since)
    if until is not None:
        q = q.where(created < until)
    return q if model is None else q.where(model_col == model)


def _requests(engine, since, until, model, columns, ok_only, ids) -> list[dict]:
    table = RequestRow.__table__
    cols = [table.c[c] for c in columns] if columns else list(table.c)
    q = select(*cols).order_by(table.c.created)
    if ids is not None:
        q = q.where(table.c.id.in_(ids))
    q = _window(q, table.c.created, table.c.model, since, until, model)
    if ok_only:
        q = q.where(table.c.status == 200)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def models(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(m for (m,) in conn.execute(select(RequestRow.model).distinct()) if m)


def feedback(engine, *, since: float | None = None, until: float | None = None, model: str | None = None
             ) -> list[dict]:
    """Feedback rows with their request's model, endpoint and status, in time order (by feedback time)."""
    fb, rq = FeedbackRow.__table__, RequestRow.__table__
    q = (select(*fb.c, rq.c.model, rq.c.endpoint, rq.c.status, rq.c.created.label("request_created"))
         .join(rq, fb.c.request_id == rq.c.id).order_by(fb.c.created))
    q = _window(q, fb.c.created, rq.c.model, since, until, model)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def prompt_of(row: dict):
    """The prompt as sent (messages list or prompt), or None when the log kept only hashes."""
    return json.loads(row["prompt"]) if row.get("prompt") else None
