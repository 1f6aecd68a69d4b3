"""export-feedback --pairs: a correction is preferred over the answer it corrected; a thumbs-up answer over a
thumbs-down answer to the same prompt; the file loads as preference data and trains `--objective dpo`."""

from __future__ import annotations

import json

import pytest

from tests.monitor.conftest import record
from tuneforge.data.formats import Preference
from tuneforge.data.load import load_samples
from tuneforge.errors import TuneforgeError
from tuneforge.monitor.export import export_pairs
from tuneforge.monitor.feedback import FeedbackRequest, add_feedback
from tuneforge.monitor.requests import RequestLog

Q = [{"role": "user", "content": "capital of France?"}]


def rate(log, i, **kw):
    add_feedback(log, FeedbackRequest(id=f"chatcmpl-{i:08d}", **kw))


def test_corrections_and_opposite_thumbs_become_pairs(database, tmp_path):
    log = RequestLog(database)
    log.hook(record(0, completions=["no idea"]))  # corrected
    log.hook(record(1, prompt=Q, completions=["Paris."]))  # up
    log.hook(record(2, prompt=Q, completions=["Lyon."]))  # down
    log.hook(record(3, prompt=Q, completions=["Marseille, probably."]))  # down, then changed to up... see below
    log.hook(record(4, prompt=[{"role": "user", "content": "lonely"}], completions=["x"]))  # up, no opposite
    log.hook(record(5, status=500, completions=[]))
    log.hook(record(6, prompt=Q, completions=["Paris."]))  # a second up with the same text: a duplicate pair
    log.flush()
    rate(log, 0, thumbs="down", correction="the right answer")
    rate(log, 1, thumbs="up")
    rate(log, 2, thumbs="down")
    rate(log, 3, thumbs="up")
    rate(log, 3, thumbs="down")  # the latest feedback counts
    rate(log, 4, thumbs="up")
    rate(log, 5, thumbs="up")
    rate(log, 6, score=0.9)
    log.close()
    res = export_pairs(database, tmp_path / "prefs.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    got = {(r["input"]["messages"][-1]["content"], r["preferred_output"][0]["content"],
            r["non_preferred_output"][0]["content"], r["metadata"]["kind"]) for r in rows}
    assert got == {("question 0", "the right answer", "no idea", "correction"),
                   ("capital of France?", "Paris.", "Lyon.", "thumbs"),
                   ("capital of France?", "Paris.", "Marseille, probably.", "thumbs")}
    assert (res.rows, res.corrections, res.thumbs) == (3, 1, 2)
    assert res.skipped["duplicate"] == 2 and res.skipped["failed request"] == 1
    assert res.skipped["no opposite answer"] == 1
    samples = load_samples(tmp_path / "prefs.jsonl")  # valid preference data, provenance kept aside
    assert all(isinstance(s, Preference) for s in samples) and samples[0].extra["metadata"]["source"]
    assert "wrote 3 preference pairs" in res.summary()


def test_no_pair_writes_nothing(database, tmp_path):
    log = RequestLog(database)
    log.hook(record(0))
    log.flush()
    rate(log, 0, thumbs="up")
    log.close()
    with pytest.raises(TuneforgeError, match="no preference pair.*1 no opposite answer"):
        export_pairs(database, tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()
