"""Monitoring's Prometheus metrics on the server's /metrics, and the scheduled drift check behind the gauges.

Request log: `tuneforge_request_log_written`, `tuneforge_request_log_dropped`, `tuneforge_request_log_queue`.
Drift (`tuneforge serve RUN --drift-interval 3600`): per signal, `tuneforge_drift_detected{signal}` (1 drift,
0 ok, -1 not computed), `tuneforge_drift_statistic{signal}`, `tuneforge_drift_p_value{signal}`; and
`tuneforge_drift_last_check_timestamp_seconds`. Alert on `max(tuneforge_drift_detected) == 1`.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Gauge

log = logging.getLogger("tuneforge.monitor")


class MonitorMetrics:
    def __init__(self, registry, request_log=None):
        if request_log is not None:
            written = Gauge("tuneforge_request_log_written", "Requests written to the request log", registry=registry)
            written.set_function(lambda: request_log.stats.written)
            dropped = Gauge("tuneforge_request_log_dropped", "Requests not logged (queue full or database error)",
                            registry=registry)
            dropped.set_function(lambda: request_log.stats.dropped)
            pending = Gauge("tuneforge_request_log_queue", "Requests waiting to be written", registry=registry)
            pending.set_function(lambda: request_log.stats.queued - request_log.stats.written)
        self.detected = Gauge("tuneforge_drift_detected", "Last drift check: 1 drift, 0 ok, -1 not computed",
                              ["signal"], registry=registry)
        self.statistic = Gauge("tuneforge_drift_statistic", "Last drift check: the signal's statistic",
                               ["signal"], registry=registry)
        self.p_value = Gauge("tuneforge_drift_p_value", "Last drift check: the signal's p-value", ["signal"],
                             registry=registry)
        self.last_check = Gauge("tuneforge_drift_last_check_timestamp_seconds", "Unix time of the last drift check",
                                registry=registry)

    def update(self, report) -> None:
        for s in report.signals:
            self.detected.labels(s.name).set(-1 if s.drift is None else int(s.drift))
            self.statistic.labels(s.name).set(float("nan") if s.statistic is None else s.statistic)
            self.p_value.labels(s.name).set(float("nan") if s.p_value is None else s.p_value)
        self.last_check.set(report.created)


class DriftSchedule:
    """Runs `drift.compute_drift` every `interval_s` on the last `window_s` of traffic in a background thread,
    records each check and updates the gauges. The run is loaded once, on the first check."""

    def __init__(self, engine, run_dir: str, metrics: MonitorMetrics, *, interval_s: float, window_s: float,
                 model: str | None = None, embeddings: bool = True):
        self.engine, self.run_dir, self.metrics = engine, run_dir, metrics
        self.interval_s, self.window_s, self.model, self.embeddings = interval_s, window_s, model, embeddings
        self.last_report = None
        self.last_error: str | None = None
        self._loaded = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneforge-drift", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def check_now(self):
        """One check (also what the schedule calls); None when there was nothing to check."""
        from tuneforge.errors import TuneforgeError
        from tuneforge.monitor import drift

        now = time.time()
        if self._loaded is None and self.embeddings:
            from tuneforge.eval.harness import load_for_inference

            self._loaded = load_for_inference(self.run_dir)
        try:
            report = drift.compute_drift(self.run_dir, self.engine, since=now - self.window_s, until=now,
                                         model=self.model, embeddings=self.embeddings, loaded=self._loaded)
        except TuneforgeError as e:  # no traffic yet, or the training data moved: say so, try again next time
            self.last_error = str(e)
            log.info("drift check skipped: %s", e)
            return None
        drift.record(self.engine, report)
        self.metrics.update(report)
        self.last_report, self.last_error = report, None
        if report.drift:
            log.warning("drift found for %s: %s", report.model, ", ".join(s.name for s in report.signals if s.drift))
        return report

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_now()
            except Exception:  # noqa: BLE001 - a failing check must not take the server down
                log.exception("scheduled drift check failed")
