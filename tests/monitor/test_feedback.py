"""POST /v1/feedback on a real server: stored with a link to the request; unknown id → 404, bad score → 400
(OpenAI error bodies); the route is behind the API key like every other; the dashboard page is open, its data
is not."""

from __future__ import annotations

import httpx
import pytest

from tests.monitor.conftest import monitored
from tuneforge.monitor import query


@pytest.fixture(scope="module")
def served(lively_base, tmp_path_factory):
    db_url = f"sqlite:///{tmp_path_factory.mktemp('fb') / 'monitor.db'}"
    with monitored(lively_base, db_url, response_cache_size=0) as (srv, mon):
        yield srv, mon


def answer(c: httpx.Client, base: str, text: str = "hello") -> str:
    r = c.post("/v1/chat/completions", json={"model": base, "max_tokens": 3,
                                             "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200
    return r.json()["id"]


def test_feedback_is_stored_linked_to_its_request(served, lively_base):
    srv, mon = served
    c = httpx.Client(base_url=srv.url, timeout=60)
    a, b, d = (answer(c, str(lively_base), t) for t in ("one", "two", "three"))
    # posted at once after the answer: the request row may still be on the writer's queue
    r1 = c.post("/v1/feedback", json={"id": a, "thumbs": "up"})
    r2 = c.post("/v1/feedback", json={"id": b, "score": 0.25, "comment": "too short, mail x@y.com",
                                      "correction": "a better answer"})
    r3 = c.post("/v1/feedback", json={"id": d, "thumbs": "down"})
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
    assert r1.json()["object"] == "feedback" and r1.json()["completion_id"] == a and r1.json()["score"] == 1.0
    stored = {f["request_id"]: f for f in query.feedback(mon.engine)}
    assert stored[a]["score"] == 1.0 and stored[a]["thumbs"] == "up"
    assert stored[b]["score"] == 0.25 and stored[b]["correction"] == "a better answer"
    assert stored[b]["comment"] == "too short, mail [EMAIL]"  # the log's redactor applies to feedback too
    assert stored[d]["score"] == 0.0 and stored[d]["model"] == str(lively_base) and stored[d]["status"] == 200
    assert {stored[x]["id"] for x in (a, b, d)} == {r1.json()["id"], r2.json()["id"], r3.json()["id"]}


def test_unknown_id_is_404_with_an_openai_error_body(served):
    srv, _ = served
    r = httpx.post(srv.url + "/v1/feedback", json={"id": "chatcmpl-doesnotexist", "score": 1})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "not_found_error" and err["param"] == "id" and err["code"] == "completion_not_found"
    assert "chatcmpl-doesnotexist" in err["message"]


@pytest.mark.parametrize("body, param", [
    ({"score": 1.5}, "score"), ({"score": -0.1}, "score"), ({"score": "high"}, "score"), ({"score": True}, "score"),
    ({}, "score"), ({"score": 1, "thumbs": "up"}, "score"), ({"thumbs": "sideways"}, "thumbs"),
    ({"score": 1, "corrected_answer": "x"}, "corrected_answer"),
])
def test_a_bad_score_or_field_is_400_naming_it(served, lively_base, body, param):
    srv, mon = served
    c = httpx.Client(base_url=srv.url, timeout=60)
    rid = answer(c, str(lively_base))
    before = len(query.feedback(mon.engine))
    r = c.post("/v1/feedback", json={"id": rid, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == param
    assert len(query.feedback(mon.engine)) == before  # nothing half-stored


def test_malformed_json_is_400(served):
    srv, _ = served
    r = httpx.post(srv.url + "/v1/feedback", content=b"{id:", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_with_an_api_key_feedback_and_dashboard_data_need_it_and_the_page_does_not(lively_base, db_url):
    with monitored(lively_base, db_url, api_keys=["k1"]) as (srv, _):
        auth = {"Authorization": "Bearer k1"}
        c = httpx.Client(base_url=srv.url, timeout=60)
        r = c.post("/v1/chat/completions", headers=auth, json={"model": str(lively_base), "max_tokens": 2,
                                                               "messages": [{"role": "user", "content": "x"}]})
        rid = r.json()["id"]
        assert c.post("/v1/feedback", json={"id": rid, "thumbs": "up"}).status_code == 401
        assert c.post("/v1/feedback", headers=auth, json={"id": rid, "thumbs": "up"}).status_code == 200
        assert c.get("/dashboard/data").status_code == 401
        assert c.get("/dashboard/data", headers=auth).json()["feedback"]["up"] == 1
        page = c.get("/dashboard")
        assert page.status_code == 200 and "<svg" not in page.text and rid not in page.text  # a shell, no data
        assert c.get("/dashboard/", headers={}).status_code == 401  # only the exact path is open
