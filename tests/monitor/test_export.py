"""export-feedback edge cases: the latest feedback wins, corrections beat scores, and what is left out (failed,
/v1/completions, hash-logged, poorly rated, duplicates) is counted; nothing to export writes nothing."""

from __future__ import annotations

import json

import pytest

from tests.monitor.conftest import record
from tuneforge.errors import TuneforgeError
from tuneforge.monitor.export import export_feedback
from tuneforge.monitor.feedback import FeedbackRequest, add_feedback
from tuneforge.monitor.requests import RequestLog


def rate(log, rid, **kw):
    add_feedback(log, FeedbackRequest(id=rid, **kw))


def test_what_is_exported_and_what_is_counted_out(database, tmp_path):
    log = RequestLog(database)
    sys_user = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "q0"}]
    log.hook(record(0, prompt=sys_user, completions=["a0"]))
    log.hook(record(1, completions=["a1"]))
    log.hook(record(2, completions=["a2"]))
    log.hook(record(3, status=500, completions=[]))
    log.hook(record(4, endpoint="completions", prompt="raw text", completions=["a4"]))
    log.hook(record(5, prompt=[{"role": "user", "content": "question 1"}], completions=["a1"]))  # same as 1
    log.flush()
    rate(log, "chatcmpl-00000000", thumbs="up")
    rate(log, "chatcmpl-00000001", thumbs="down")
    rate(log, "chatcmpl-00000001", thumbs="up")  # changed their mind: the latest counts
    rate(log, "chatcmpl-00000002", score=0.2, correction="the right answer")
    rate(log, "chatcmpl-00000003", thumbs="up")
    rate(log, "chatcmpl-00000004", thumbs="up")
    rate(log, "chatcmpl-00000005", thumbs="up")
    log.close()
    res = export_feedback(database, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (res.rows, res.corrected, res.well_rated) == (3, 1, 2)
    assert res.skipped == {"not chat": 1, "no text logged": 0, "failed request": 1, "rated below --min-score": 0,
                           "duplicate": 1}
    by_id = {r["metadata"]["request_id"]: r for r in rows}
    assert by_id["chatcmpl-00000000"]["messages"] == [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "q0"},
                                                      {"role": "assistant", "content": "a0"}]
    assert by_id["chatcmpl-00000002"]["messages"][-1]["content"] == "the right answer"
    assert by_id["chatcmpl-00000002"]["metadata"]["corrected"] is True
    assert by_id["chatcmpl-00000001"]["metadata"]["thumbs"] == "up"
    assert "wrote 3 training rows" in res.summary() and "1 duplicate" in res.summary()


def test_poor_ratings_and_hash_logged_requests_are_not_exported_and_nothing_is_written(database, tmp_path):
    log = RequestLog(database, content="hash")
    log.hook(record(0))
    log.flush()
    rate(log, "chatcmpl-00000000", thumbs="up", correction="fixed")
    log.close()
    full = RequestLog(database)
    full.hook(record(1))
    full.flush()
    rate(full, "chatcmpl-00000001", score=0.5)
    full.close()
    with pytest.raises(TuneforgeError, match="no request qualifies.*1 no text logged.*1 rated below"):
        export_feedback(database, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    assert export_feedback(database, tmp_path / "low.jsonl", min_score=0.5).rows == 1
