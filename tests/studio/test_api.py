"""Each /v1/tuneforge route over a real server (tiny base, real SQLite, real files), its answers and its errors."""

from __future__ import annotations

import pytest

from tests.studio.conftest import KEY, TINY, api, assert_openai_error, chat_rows, poll, studio_server, upload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(studio_base, tmp_path_factory):
    with studio_server(studio_base, tmp_path_factory.mktemp("studio-api")) as (srv, app):
        yield srv


@pytest.fixture(scope="module")
def c(server):
    with api(server) as client:
        yield client


def test_the_page_is_open_and_its_data_needs_the_key(server):
    import httpx

    page = httpx.get(server.url + "/studio")
    assert page.status_code == 200 and "<title>tuneforge studio</title>" in page.text
    assert httpx.get(server.url + "/studio/studio.js").status_code == 200
    for path in ("/v1/tuneforge/runs", "/v1/tuneforge/train/schema", "/v1/tuneforge/tasks"):
        assert_openai_error(httpx.get(server.url + path), 401)
        assert_openai_error(httpx.get(server.url + path, headers={"Authorization": "Bearer wrong"}), 401)
    assert_openai_error(httpx.get(server.url + "/studio/../v1/tuneforge/runs"), 401)


def test_data_check_names_the_broken_line_of_the_upload(c):
    rows = chat_rows(12)
    rows[2] = '{"messages": [{"role": "user", "content": "add 2 and 3"}'  # line 3: cut-off JSON
    fid = upload(c, rows, name="mine.jsonl")
    r = c.post("/v1/tuneforge/data/check", json={"file_id": fid})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["ok"] is False and rep["n_examples"] == 12 and rep["n_valid"] == 11
    assert rep["errors"][0]["line"] == 3 and rep["errors"][0]["code"]
    assert rep["errors"][0]["where"] == "mine.jsonl:3" and "files/" not in str(rep)  # the upload's name, not ours


def test_data_check_reports_histogram_truncation_duplicates_and_balance(c):
    rows = [{"text": f"is {i} even? " + "x " * (i % 7) * 5, "label": "yes" if i % 2 == 0 else "no"}
            for i in range(30)]
    rows.append(dict(rows[0]))  # an exact duplicate
    fid = upload(c, rows)
    rep = c.post("/v1/tuneforge/data/check", json={"file_id": fid, "max_seq_len": 24}).json()
    assert rep["ok"] is True and rep["n_valid"] == 31
    hist = rep["tokens"]["histogram"]
    assert sum(hist["counts"]) == 31 and len(hist["edges"]) == len(hist["counts"]) + 1
    assert rep["n_truncated"] > 0 and rep["max_seq_len"] == 24
    assert rep["duplicates"]["exact"] and rep["label_balance"]


def test_data_routes_refuse_missing_or_unknown_files_and_bad_values(c):
    assert_openai_error(c.post("/v1/tuneforge/data/check", json={}), 400, "file_id")
    assert_openai_error(c.post("/v1/tuneforge/data/check", json={"file_id": "file-nope"}), 404, "file_id")
    assert_openai_error(c.post("/v1/tuneforge/data/check", content=b"{not json"), 400)
    fid = upload(c, chat_rows(12))
    assert_openai_error(c.post("/v1/tuneforge/data/check", json={"file_id": fid, "max_seq_len": "long"}), 400,
                        "max_seq_len")
    assert_openai_error(c.post("/v1/tuneforge/data/check", json={"file_id": fid, "model": "gpt-9"}), 400, "model")
    assert_openai_error(c.post("/v1/tuneforge/data/cost", json={"file_id": fid, "config": {"lora_rr": 4}}), 400,
                        "tuneforge.lora_rr")


def test_advise_gives_a_verdict_with_reasons(c):
    fid = upload(c, chat_rows(40))
    r = c.post("/v1/tuneforge/data/advise", json={"file_id": fid})
    assert r.status_code == 200, r.text
    adv = r.json()
    assert adv["verdict"] in ("go", "no-go", "maybe") and adv["reasons"]
    assert all(x["message"] and x["signal"] for x in adv["reasons"])
    assert adv["method"]["value"] in ("lora", "qlora") and adv["method"]["reason"]


def test_cost_estimates_time_and_money_for_the_file(c):
    fid = upload(c, chat_rows(20))
    r = c.post("/v1/tuneforge/data/cost", json={"file_id": fid, "bench_steps": 1, "config": {"max_seq_len": 64}})
    assert r.status_code == 200, r.text
    est = r.json()
    assert est["object"] == "tuneforge.cost" and est["train_seconds"] > 0 and est["steps"] > 0
    task = c.post("/v1/tuneforge/data/cost", json={"file_id": fid, "bench_steps": 1, "background": True}).json()
    task = poll(c, f"/v1/tuneforge/tasks/{task['id']}", lambda t: t["status"] in ("succeeded", "failed"))
    assert task["kind"] == "cost" and task["status"] == "succeeded" and task["result"]["train_seconds"] > 0
    assert_openai_error(c.post("/v1/tuneforge/data/cost", json={"file_id": fid, "background": "yes"}), 400,
                        "background")


def test_schema_and_validation_speak_the_jobs_api_language(c):
    from tuneforge.config import TrainConfig

    schema = c.get("/v1/tuneforge/train/schema").json()
    keys = {k["name"]: k for k in schema["keys"]}
    assert set(keys) == set(TrainConfig.model_fields)
    assert all(k["description"] for k in keys.values())
    assert keys["learning_rate"]["set_by_job"] and not keys["lora_r"]["set_by_job"]
    assert "cosine" in keys["lr_scheduler_type"]["choices"] and keys["lora_r"]["minimum"] == 1
    ok = c.post("/v1/tuneforge/train/validate", json={"hyperparameters": {"n_epochs": 2},
                                                      "tuneforge": {"lora_r": 8}}).json()
    assert ok == {"object": "tuneforge.validation", "ok": True, "errors": []}
    bad = c.post("/v1/tuneforge/train/validate", json={
        "hyperparameters": {"n_epochs": 0, "learning_rate_multiplier": 2},
        "tuneforge": {"lora_r": 0, "lora_dropout": 0.1, "warmup_ratioo": 0.1, "method": "full"}}).json()
    params = {e["param"]: e["message"] for e in bad["errors"]}
    assert bad["ok"] is False and set(params) == {"hyperparameters.n_epochs", "tuneforge.lora_r",
                                                   "tuneforge.warmup_ratioo", "tuneforge.method"}
    assert "integer in [1, 50]" in params["hyperparameters.n_epochs"]
    # the same message a job creation answers
    fid = upload(c, chat_rows(12))
    created = c.post("/v1/fine_tuning/jobs", json={"model": "x", "training_file": fid,
                                                   "tuneforge": {"lora_r": 0}})
    assert created.status_code in (400, 404)


def test_defaults_say_what_a_job_would_choose_and_why(c, studio_base):
    fid = upload(c, chat_rows(24))
    r = c.post("/v1/tuneforge/train/defaults", json={"file_id": fid})
    assert r.status_code == 200, r.text
    d = r.json()
    v = d["values"]
    assert v["method"]["value"] == "lora" and "method auto" in v["method"]["reason"]
    assert v["learning_rate"]["value"] == 2e-3 and "learning_rate 0.002 (auto)" in v["learning_rate"]["reason"]
    assert v["n_epochs"]["value"] == 5 and "24 examples" in v["n_epochs"]["reason"]  # ceil(100 / 24)
    assert "num_train_epochs" in v["train_num_train_epochs"]["reason"]
    assert d["config"]["lora_r"] == 16 and "learning_rate" not in d["config"]
    assert d["job"]["training_file"] == fid and d["job"]["model"] == str(studio_base)
    explicit = c.post("/v1/tuneforge/train/defaults", json={"file_id": fid, "tuneforge": {"method": "qlora"}}).json()
    assert explicit["values"]["method"]["value"] == "qlora"
    bad = upload(c, ['{"prompt": 1}'] + chat_rows(3))
    assert_openai_error(c.post("/v1/tuneforge/train/defaults", json={"file_id": bad}), 400)


def test_runs_evals_exports_and_tasks_refuse_what_does_not_exist(c):
    assert_openai_error(c.get("/v1/tuneforge/runs/nope"), 404, "run")
    assert_openai_error(c.get("/v1/tuneforge/runs/..%2F..%2Fetc"), 404)
    assert_openai_error(c.get("/v1/tuneforge/tasks/task-nope"), 404, "task_id")
    assert c.get("/v1/tuneforge/runs").json()["object"] == "list"


def test_the_whole_flow_over_http_alone(c, studio_base):
    """What the page does, with httpx only: upload → check → defaults → job (learning rate x2) → succeeded →
    chat with it → run, compare → eval task → export GGUF task → verify passed → download."""
    fid = upload(c, chat_rows(24))
    assert c.post("/v1/tuneforge/data/check", json={"file_id": fid}).json()["ok"] is True
    request = c.post("/v1/tuneforge/train/defaults", json={"file_id": fid}).json()["job"]
    request["hyperparameters"]["learning_rate_multiplier"] = 2.0
    request["tuneforge"].update(TINY)
    assert c.post("/v1/tuneforge/train/validate", json=request).json()["ok"] is True
    job = c.post("/v1/fine_tuning/jobs", json=request).json()
    job = poll(c, f"/v1/fine_tuning/jobs/{job['id']}", lambda j: j["status"] in ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    chat = c.post("/v1/chat/completions", json={"model": job["fine_tuned_model"], "max_tokens": 4,
                                                "messages": [{"role": "user", "content": "add 2 and 3"}]})
    assert chat.status_code == 200 and chat.json()["model"] == job["fine_tuned_model"]
    run = c.get(f"/v1/tuneforge/runs/{job['id']}").json()
    assert run["id"] == job["id"] and run["config"]["learning_rate"] == pytest.approx(2 * 2e-3)
    assert any("train_loss" in row or "loss" in row for row in run["metrics_rows"])
    assert job["id"] in {r["id"] for r in c.get("/v1/tuneforge/runs").json()["data"]}
    diff = c.get(f"/v1/tuneforge/runs/{job['id']}/compare/{job['id']}").json()
    assert diff["object"] == "tuneforge.run_diff"

    assert_openai_error(c.get(f"/v1/tuneforge/runs/{job['id']}/eval"), 404, "run")
    task = c.post(f"/v1/tuneforge/runs/{job['id']}/evals", json={"file_id": fid, "limit": 6,
                                                                  "max_new_tokens": 4}).json()
    assert task["object"] == "tuneforge.task" and task["status"] in ("queued", "running")
    task = poll(c, f"/v1/tuneforge/tasks/{task['id']}", lambda t: t["status"] in ("succeeded", "failed"))
    assert task["status"] == "succeeded", task
    ev = task["result"]
    assert set(ev["models"]) == {"baseline", "tuned"} and ev["n_examples"] == 6
    assert all(d["low"] <= d["delta"] <= d["high"] for d in ev["delta"].values()) and "exact_match" in ev["delta"]
    assert ev["worst"] and all(w["similarity"] < 1 for w in ev["worst"])
    assert c.get(f"/v1/tuneforge/runs/{job['id']}/eval").json()["n_examples"] == 6
    sheet = c.get(f"/v1/tuneforge/runs/{job['id']}/human-eval")
    assert sheet.status_code == 200 and sheet.content[:2] == b"PK"
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(sheet.content)).namelist()
    assert any(n.endswith(".csv") for n in names) and any(n.endswith(".html") for n in names)
    broken = upload(c, ['{"messages": ['] + chat_rows(3), name="held-out.jsonl")
    task = c.post(f"/v1/tuneforge/runs/{job['id']}/evals", json={"file_id": broken}).json()
    task = poll(c, f"/v1/tuneforge/tasks/{task['id']}", lambda t: t["status"] in ("succeeded", "failed"))
    assert task["status"] == "failed" and "held-out.jsonl:1" in task["error"]["message"]
    assert "files/" not in task["error"]["message"] and task["error"]["code"] == "invalid_json"

    assert_openai_error(c.post(f"/v1/tuneforge/runs/{job['id']}/exports", json={"format": "tflite"}), 400,
                        "format")
    assert_openai_error(c.get(f"/v1/tuneforge/runs/{job['id']}/exports/gguf-f16/content"), 404)
    task = c.post(f"/v1/tuneforge/runs/{job['id']}/exports", json={"format": "gguf-f16"}).json()
    task = poll(c, f"/v1/tuneforge/tasks/{task['id']}", lambda t: t["status"] in ("succeeded", "failed"))
    assert task["status"] == "succeeded", task
    ex = task["result"]
    assert ex["passed"] is True and ex["verify"]["checks"]
    listed = c.get(f"/v1/tuneforge/runs/{job['id']}/exports").json()["data"]
    assert [e["format"] for e in listed] == ["gguf-f16"]
    blob = c.get(ex["download_url"])
    assert blob.status_code == 200 and blob.content[:4] == b"GGUF"
    assert "attachment" in blob.headers["content-disposition"]
