"""The request log: every answered request becomes a row (status, latency, tokens, content), written off the
event loop; nothing is lost on a clean shutdown; a full queue drops and counts instead of blocking; hash mode,
redaction and retention."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from tests.monitor.conftest import monitored, record
from tuneforge.errors import ConfigError
from tuneforge.monitor import query
from tuneforge.monitor.redact import load_redactor, redact_pii
from tuneforge.monitor.requests import RequestLog, RequestRow, apply_retention


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(RequestRow)).scalar_one()


def test_server_logs_every_answer_and_error_with_status_latency_and_tokens(lively_base, db_url):
    base = str(lively_base)
    sent: dict[str, int] = {}
    usage: dict[str, dict] = {}
    with monitored(lively_base, db_url, response_cache_size=0) as (srv, mon):
        c = httpx.Client(base_url=srv.url, timeout=60)
        for i in range(4):
            r = c.post("/v1/chat/completions", json={"model": base, "max_tokens": 4 + i, "temperature": 0,
                                                     "messages": [{"role": "user", "content": f"hello {i}"}]})
            sent[r.json()["id"]] = 200
            usage[r.json()["id"]] = r.json()["usage"]
        r = c.post("/v1/completions", json={"model": base, "prompt": "SELECT", "max_tokens": 3, "temperature": 0})
        sent[r.json()["id"]] = 200
        usage[r.json()["id"]] = r.json()["usage"]
        with c.stream("POST", "/v1/chat/completions", json={"model": base, "max_tokens": 5, "stream": True,
                                                            "temperature": 0,
                                                            "messages": [{"role": "user", "content": "s"}]}) as s:
            lines = [ln for ln in s.iter_lines() if ln.startswith("data: {")]
        sent[json.loads(lines[0][6:])["id"]] = 200
        errors = [c.post("/v1/chat/completions", json={"model": "no-such-model", "messages": [
                      {"role": "user", "content": "x"}]}),
                  c.post("/v1/chat/completions", json={"model": base, "max_tokens": -1, "messages": [
                      {"role": "user", "content": "x"}]}),
                  c.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})]
        assert [e.status_code for e in errors] == [404, 400, 400]
    # the server has shut down: the log was drained without an explicit flush
    rows = query.requests(mon.engine)
    assert len(rows) == len(sent) + len(errors)
    by_id = {r["id"]: r for r in rows}
    for rid, status in sent.items():
        row = by_id[rid]
        assert row["status"] == status and row["error"] is None
        assert 0 < row["latency_s"] < 60 and row["queue_time_s"] is not None
        if row["completion_tokens"]:  # an answer that is only the end-of-turn token has no first token
            assert row["queue_time_s"] <= row["ttft_s"] <= row["latency_s"]
        assert row["content"] == "full" and row["completion_chars"] == len(row["completion"] or "")
    for rid, u in usage.items():
        assert (by_id[rid]["prompt_tokens"], by_id[rid]["completion_tokens"]) == (u["prompt_tokens"],
                                                                                   u["completion_tokens"])
    assert by_id[next(iter(usage))]["prompt"] == json.dumps([{"role": "user", "content": "hello 0"}])
    failed = sorted((r for r in rows if r["status"] != 200), key=lambda r: r["status"])
    assert [r["status"] for r in failed] == [400, 400, 404]
    assert all(r["error"] and r["error_type"] == ("not_found_error" if r["status"] == 404 else
                                                  "invalid_request_error") for r in failed)
    assert {r["model"] for r in failed} >= {"no-such-model"}
    assert mon.log.stats.dropped == 0 and mon.log.stats.written == len(rows)


def test_no_row_is_lost_when_thousands_arrive_at_once_and_the_log_closes(database):
    log = RequestLog(database, batch_size=64)
    n_threads, per_thread = 4, 750

    def send(t: int) -> None:
        for i in range(per_thread):
            log.hook(record(t * per_thread + i))

    threads = [threading.Thread(target=send, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert count(database) == n_threads * per_thread == log.stats.written
    assert log.stats.dropped == 0
    ids = {r["id"] for r in query.requests(database, columns=("id",))}
    assert ids == {f"chatcmpl-{i:08d}" for i in range(n_threads * per_thread)}


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_server(database):
    log = RequestLog(database, queue_size=5, start=False)  # a writer that has fallen behind
    t0 = time.perf_counter()
    for i in range(20):
        log.hook(record(i))
    assert time.perf_counter() - t0 < 0.5  # the hook never waits for the database
    assert log.stats.dropped == 15 and log.stats.queued == 5
    log.close()  # starts the writer, drains what was queued
    assert count(database) == 5 == log.stats.written


def test_feedback_can_wait_for_a_row_still_on_the_queue(database):
    log = RequestLog(database, start=False)
    log.hook(record(7))
    assert log.is_pending("chatcmpl-00000007") and count(database) == 0
    log.start()
    assert log.flush(10)
    assert not log.is_pending("chatcmpl-00000007") and count(database) == 1
    log.close()


def test_hash_mode_keeps_only_hashes_and_lengths(database):
    log = RequestLog(database, content="hash", redact=load_redactor("none"))
    log.hook(record(1, prompt=[{"role": "user", "content": "secret plan"}], completions=["the answer"]))
    log.close()
    (row,) = query.requests(database)
    assert row["prompt"] is None and row["completion"] is None and row["content"] == "hash"
    assert row["prompt_sha256"] == hashlib.sha256(b"secret plan").hexdigest() and row["prompt_chars"] == 11
    assert row["completion_sha256"] == hashlib.sha256(b"the answer").hexdigest() and row["completion_chars"] == 10
    raw = database.raw_connection()
    try:
        dump = "\n".join(raw.iterdump())
    finally:
        raw.close()
    assert "secret plan" not in dump and "the answer" not in dump


@pytest.mark.parametrize("text, expected", [
    ("mail jane.doe+x@mail.example.co.uk now", "mail [EMAIL] now"),
    ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]"),
    ("ring 555-123-4567.", "ring [PHONE]."),
    ("+14155552671", "[PHONE]"),
    ("add 12 and 34", "add 12 and 34"),
    ("pi is 3.14159, born 2024-01-15, order 1234567", "pi is 3.14159, born 2024-01-15, order 1234567"),
    ("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = 42"),
])
def test_default_redactor_removes_emails_and_phone_numbers_and_keeps_other_numbers(text, expected):
    assert redact_pii(text) == expected


def test_the_log_stores_redacted_text_and_a_custom_redactor_can_be_named(database, tmp_path, monkeypatch):
    (tmp_path / "my_scrub.py").write_text("def scrub(text):\n    return text.replace('Alice', '[NAME]')\n"
                                          "NOT_A_FUNCTION = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_scrub", None)
    log = RequestLog(database, redact=load_redactor("my_scrub:scrub"))
    log.hook(record(1, prompt=[{"role": "user", "content": "Alice says hi"}], completions=["hi Alice"]))
    log.close()
    (row,) = query.requests(database)
    assert json.loads(row["prompt"])[0]["content"] == "[NAME] says hi" and row["completion"] == "hi [NAME]"
    for spec, msg in [("my_scrub:missing", "has no function"), ("no_such_module_xyz:f", "cannot import"),
                      ("my_scrub:NOT_A_FUNCTION", "not a function"), ("justaname", "module:function")]:
        with pytest.raises(ConfigError, match=msg):
            load_redactor(spec)


def test_retention_deletes_the_oldest_rows_and_their_feedback(database):
    from tuneforge.monitor.feedback import FeedbackRow

    now = time.time()
    log = RequestLog(database)
    for i in range(10):
        log.hook(record(i, created=now - 86400 * (10 - i)))  # one a day, oldest first
    log.close()
    with database.begin() as conn:
        conn.execute(FeedbackRow.__table__.insert(), [
            {"id": "fb-old", "request_id": "chatcmpl-00000000", "created": now, "score": 1.0},
            {"id": "fb-new", "request_id": "chatcmpl-00000009", "created": now, "score": 0.0}])
    assert apply_retention(database, max_age_days=5.5, now=now) == 5  # days 10..6 ago
    assert apply_retention(database, max_rows=3, now=now) == 2
    assert [r["id"] for r in query.requests(database, columns=("id",))] == [
        f"chatcmpl-{i:08d}" for i in (7, 8, 9)]
    assert [f["id"] for f in query.feedback(database)] == ["fb-new"]  # fb-old went with its request


def test_bad_log_settings_are_one_line_errors(database):
    with pytest.raises(ConfigError, match="--log-content"):
        RequestLog(database, content="everything")
    with pytest.raises(ConfigError, match="--log-max-rows"):
        RequestLog(database, max_rows=0)
