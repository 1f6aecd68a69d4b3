"""Wire monitoring into a server app: request log hook, /v1/feedback, /dashboard, metrics, scheduled drift.

    app = create_app(engine, open_paths=serve.app.OPEN_PATHS | dashboard.OPEN_PATHS)
    mon = attach_monitoring(app, MonitorSettings(db="sqlite:///tuneforge.db", drift_run="runs/sql",
                                                 drift_interval_s=3600))

`tuneforge serve` does exactly this (`tuneforge.service.build_server`). The app's shutdown hooks stop the drift schedule and drain the request
log, so a clean shutdown (Ctrl-C, SIGTERM, the end of a `with BackgroundServer(app)`)
writes every answered request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tuneforge.errors import ConfigError


@dataclass
class MonitorSettings:
    db: str | None = None  # SQLAlchemy URL; None = tuneforge.db.default_db_url()
    content: str = "full"  # --log-content full|hash
    redact: str | None = "pii"  # --redact pii|none|module:function
    max_rows: int | None = None  # --log-max-rows
    max_age_days: float | None = None  # --log-max-days
    drift_run: str | None = None  # the run whose training data drift compares with
    drift_model: str | None = None  # its served name (default: the run's directory name)
    drift_interval_s: float = 0.0  # 0 = no scheduled drift checks
    drift_window_s: float = 86400.0  # each scheduled check looks at this much recent traffic
    drift_embeddings: bool = True

    def check(self) -> None:
        """Every setting that can be wrong, checked without touching the database or loading a model."""
        from tuneforge.monitor.redact import load_redactor
        from tuneforge.monitor.requests import CONTENT_MODES
        from tuneforge.run import is_run

        if self.content not in CONTENT_MODES:
            raise ConfigError(f"--log-content {self.content}: expected one of {', '.join(CONTENT_MODES)}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"--log-max-rows {self.max_rows}: must be at least 1")
        if self.max_age_days is not None and self.max_age_days <= 0:
            raise ConfigError(f"--log-max-days {self.max_age_days}: must be positive")
        load_redactor(self.redact)
        if self.drift_interval_s < 0:
            raise ConfigError(f"--drift-interval {self.drift_interval_s}: must be 0 (off) or positive")
        if self.drift_interval_s and not self.drift_run:
            raise ConfigError("--drift-interval needs a run to compare with: serve a run directory or pass "
                              "--drift-run RUN")
        if self.drift_run and not is_run(self.drift_run):
            raise ConfigError(f"--drift-run {self.drift_run}: not a finished run directory (no run.json)")


@dataclass
class Monitoring:
    engine: object  # SQLAlchemy engine
    log: object  # requests.RequestLog
    metrics: object  # metrics.MonitorMetrics
    drift: object | None  # metrics.DriftSchedule


def attach_monitoring(app, settings: MonitorSettings | None = None, *, database=None) -> Monitoring:
    """Add monitoring to an app made by `serve.app.create_app`; `database`: an engine from `db.connect`."""
    from tuneforge.db import TableBase, connect
    from tuneforge.monitor import drift as _drift  # noqa: F401 - declares drift_checks before connect()
    from tuneforge.monitor.dashboard import dashboard_router
    from tuneforge.monitor.feedback import feedback_router
    from tuneforge.monitor.metrics import DriftSchedule, MonitorMetrics
    from tuneforge.monitor.redact import load_redactor
    from tuneforge.monitor.requests import RequestLog

    s = settings or MonitorSettings()
    s.check()
    engine = database if database is not None else connect(s.db)
    TableBase.metadata.create_all(engine)  # monitoring's tables, even if the caller connected before importing them
    log = RequestLog(engine, content=s.content, redact=load_redactor(s.redact), max_rows=s.max_rows,
                     max_age_days=s.max_age_days)
    app.state.request_hooks.append(log.hook)
    app.include_router(feedback_router(log))
    app.include_router(dashboard_router(engine))
    metrics = MonitorMetrics(app.state.metrics.registry, log)
    schedule = None
    if s.drift_interval_s:
        schedule = DriftSchedule(engine, s.drift_run, metrics, interval_s=s.drift_interval_s,
                                 window_s=s.drift_window_s, model=s.drift_model, embeddings=s.drift_embeddings)
    mon = Monitoring(engine, log, metrics, schedule)
    app.state.monitor = mon

    async def stop() -> None:  # the app's shutdown: after the last answer, before the engine stops
        loop = asyncio.get_running_loop()
        if schedule is not None:
            await loop.run_in_executor(None, schedule.stop)
        await loop.run_in_executor(None, log.close)

    if schedule is not None:
        app.state.startup_hooks.append(schedule.start)
    app.state.shutdown_hooks.append(stop)
    return mon
