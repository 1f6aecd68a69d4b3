"""What the dashboard draws, computed from the log: time buckets, latency percentiles, error rates, per-model
requests and tokens, feedback counts; the report file is self-contained and user text cannot break out of it."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.monitor.conftest import record
from tuneforge.monitor.dashboard import bucket_seconds, dashboard_data, render_html, write_dashboard
from tuneforge.monitor.feedback import FeedbackRequest, add_feedback
from tuneforge.monitor.requests import RequestLog


@pytest.fixture
def logged(database):
    t0 = float(int(time.time()) // 60 * 60 - 120)  # a round minute; the feedback below comes within 3 minutes
    log = RequestLog(database)
    for i in range(30):  # minute 0: model a, latencies 0.01..0.30 s
        log.hook(record(i, model="a", created=t0 + i, latency_s=0.01 * (i + 1), prompt_tokens=10,
                        completion_tokens=2))
    for i in range(10):  # minute 2: model b, every other one a 500
        log.hook(record(100 + i, model="b", created=t0 + 120 + i, status=500 if i % 2 else 200, latency_s=1.0,
                        prompt_tokens=5, completion_tokens=1, error="boom" if i % 2 else None))
    log.flush()
    add_feedback(log, FeedbackRequest(id="chatcmpl-00000000", thumbs="up"))
    add_feedback(log, FeedbackRequest(id="chatcmpl-00000001", thumbs="down", correction="better"))
    add_feedback(log, FeedbackRequest(id="chatcmpl-00000002", score=0.5))
    log.close()
    return database, t0


def test_buckets_percentiles_errors_and_models(logged):
    database, t0 = logged
    d = dashboard_data(database)
    assert d["bucket_s"] == 5  # spans under 5 minutes: 5 s buckets (at most 60)
    tl = {b["t"] - t0: b for b in d["timeline"]}
    assert sum(b["requests"] for b in d["timeline"]) == 40
    assert tl[0]["requests"] == 5 and tl[0]["p50"] == pytest.approx(0.03) and tl[0]["error_rate"] == 0
    assert tl[120]["requests"] == 5 and tl[120]["errors"] == 2 and tl[120]["server_error_rate"] == pytest.approx(0.4)
    assert tl[120]["p99"] == pytest.approx(1.0)  # percentiles of the answered requests only
    models = {m["model"]: m for m in d["models"]}
    assert models["a"] == {"model": "a", "requests": 30, "errors": 0, "prompt_tokens": 300, "completion_tokens": 60,
                           "p50": pytest.approx(0.155)}
    assert models["b"]["errors"] == 5 and models["b"]["prompt_tokens"] == 50
    assert d["totals"]["requests"] == 40 and d["totals"]["errors"] == 5
    fb = d["feedback"]
    assert (fb["n"], fb["up"], fb["down"], fb["scored"], fb["corrections"]) == (3, 1, 1, 1, 1)
    assert fb["mean"] == pytest.approx(0.5) and fb["recent"][0]["score"] == 0.5  # newest first


def test_a_window_leaves_older_requests_out(logged):
    database, t0 = logged
    d = dashboard_data(database, since=t0 + 100)
    assert d["totals"]["requests"] == 10 and [m["model"] for m in d["models"]] == ["b"]


def test_the_report_is_one_file_and_user_text_cannot_close_its_script(database, tmp_path):
    log = RequestLog(database)
    log.hook(record(1, model="</script><script>alert(1)</script>"))
    log.close()
    out = write_dashboard(database, tmp_path / "r.html")
    html = out.read_text()
    assert html.count("</script>") == 1  # only the page's own
    data = json.loads(re.search(r"const EMBEDDED = (.*?);\nconst LIVE", html, re.S).group(1))
    assert data["models"][0]["model"] == "</script><script>alert(1)</script>"  # escaped, not lost
    assert "const LIVE = false" in html and "const LIVE = true" in render_html(None)


def test_bucket_sizes_are_round_and_bounded():
    assert bucket_seconds(30) == 1 and bucket_seconds(3600) == 60 and bucket_seconds(7 * 86400) == 10800
    assert all(span / bucket_seconds(span) <= 60 for span in (1, 59, 61, 1000, 86400, 30 * 86400))
