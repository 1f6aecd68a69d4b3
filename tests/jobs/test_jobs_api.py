"""/v1/fine_tuning/jobs without a worker (nothing trains): creation and file validation, bad requests with the
field named, unknown ids, cancel/pause/resume state rules, and paging through jobs and events."""

from __future__ import annotations

import io

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from tests.jobs.conftest import chat_rows, client, jobs_server, jsonl_bytes, upload, validate_job, wait_for


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobsapi")
    with jobs_server(tiny_dir, root, worker=False) as (srv, api):
        yield srv, api, root


@pytest.fixture(scope="module")
def good_file(server):
    return upload(client(server[0]), chat_rows(12))


def test_a_new_job_is_validated_then_queued_and_echoes_what_was_asked(server, good_file, tiny_dir):
    srv, api, root = server
    c = client(srv)
    job = c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=good_file.id, suffix="sql", seed=7,
                                    metadata={"team": "data"},
                                    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
                                    extra_body={"tuneforge": {"method": "qlora", "lora_r": 4}})
    FineTuningJob.model_validate(job.model_dump())
    assert job.status == "validating_files" and job.id.startswith("ftjob-")
    assert (job.model, job.seed, job.metadata, job.training_file) == (str(tiny_dir), 7, {"team": "data"},
                                                                      good_file.id)
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.tuneforge["method"] == "qlora" and job.tuneforge["lora_r"] == 4
    queued = wait_for(c, job.id, lambda j: j.status != "validating_files", timeout=60)
    validate_job(queued)
    assert queued.status == "queued" and queued.fine_tuned_model is None and queued.error is None
    messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id)]
    assert messages[0] == "Files validated, moving job to queued state"
    c.fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize("rows,bad,code,line", [
    (chat_rows(12), '{"messages": [{"role": "wizard", "content": "hi"}]}', "unrecognized_role", 13),
    (chat_rows(12), '{"messages": [{"role": "user", "content": "hi"}', "invalid_json", 13),
    (chat_rows(12), '{"messages": [{"role": "user", "content": "hi"}]}', "example_missing_assistant_message", 13),
    (chat_rows(5), None, "invalid_n_examples", None),
])
def test_a_bad_training_file_fails_the_job_with_the_data_check_code(server, tiny_dir, rows, bad, code, line):
    srv, api, root = server
    c = client(srv)
    data = jsonl_bytes(rows) + ((bad + "\n").encode() if bad else b"")
    f = c.files.create(file=("t.jsonl", io.BytesIO(data)), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=f.id)
    failed = wait_for(c, job.id, timeout=60)
    FineTuningJob.model_validate(failed.model_dump())
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error.code == code and failed.error.param == "training_file", failed.error
    if line:
        assert f"line {line}" in failed.error.message
    assert not (root / "runs" / job.id).exists()  # nothing trained
    events = list(c.fine_tuning.jobs.list_events(job.id))
    assert events[0].level == "error" and failed.error.message in events[0].message


def test_unknown_ids_and_models(server, good_file, tiny_dir):
    srv, _, _ = server
    c = client(srv)
    with pytest.raises(openai.BadRequestError) as e:  # the guide's placeholder id
        c.fine_tuning.jobs.create(training_file="file-abc123", model=str(tiny_dir))
    assert e.value.body["param"] == "training_file" and e.value.body["code"] == "file_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(training_file=good_file.id, validation_file="file-nope", model=str(tiny_dir))
    assert e.value.body["param"] == "validation_file"
    with pytest.raises(openai.NotFoundError) as e:  # the guide's model: not served here, and the error says which are
        c.fine_tuning.jobs.create(training_file=good_file.id, model="gpt-3.5-turbo")
    assert e.value.body["code"] == "model_not_found" and str(tiny_dir) in e.value.body["message"]
    for call in (c.fine_tuning.jobs.retrieve, c.fine_tuning.jobs.cancel, c.fine_tuning.jobs.pause,
                 c.fine_tuning.jobs.resume, c.fine_tuning.jobs.list_events, c.fine_tuning.jobs.checkpoints.list):
        with pytest.raises(openai.NotFoundError) as e:
            call("ftjob-doesnotexist")
        assert e.value.body["code"] == "job_not_found"


def test_the_guides_module_level_call_reaches_this_server(server, good_file, tiny_dir, monkeypatch):
    """The guide's `openai.FineTuningJob.create(training_file=..., model=...)`, in openai>=1 spelling."""
    monkeypatch.setattr(openai, "base_url", server[0].url + "/v1/")  # module level: keep the slash
    monkeypatch.setattr(openai, "api_key", "unused")
    job = openai.fine_tuning.jobs.create(training_file=good_file.id, model=str(tiny_dir))
    assert job.status == "validating_files" and job.training_file == good_file.id
    client(server[0]).fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize("extra,param", [
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "rlhf"}}, "method.type"),
    ({"suffix": "no spaces please"}, "suffix"),
    ({"seed": -1}, "seed"),
    ({"metadata": {"k": 5}}, "metadata"),
    ({"extra_body": {"tuneforge": {"lora_rank": 8}}}, "tuneforge.lora_rank"),
    ({"extra_body": {"tuneforge": {"method": "full"}}}, "tuneforge.method"),
])
def test_bad_job_requests_are_400_naming_the_field(server, good_file, tiny_dir, extra, param):
    c = client(server[0])
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=good_file.id, **extra)
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"


def test_cancel_pause_resume_follow_the_job_state(server, good_file, tiny_dir):
    c = client(server[0])
    job = c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=good_file.id)
    wait_for(c, job.id, lambda j: j.status == "queued", timeout=60)
    for call in (c.fine_tuning.jobs.pause, c.fine_tuning.jobs.resume):  # neither running nor paused
        with pytest.raises(openai.BadRequestError) as e:
            call(job.id)
        assert e.value.body["code"] == "invalid_job_state"
    cancelled = c.fine_tuning.jobs.cancel(job.id)
    FineTuningJob.model_validate(cancelled.model_dump())
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError) as e:  # a finished job cannot be cancelled
        c.fine_tuning.jobs.cancel(job.id)
    assert "cancelled" in e.value.body["message"]


def test_jobs_and_events_page_newest_first(server, good_file, tiny_dir):
    c = client(server[0])
    ids = [c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=good_file.id,
                                     metadata={"batch": "paging"}).id for _ in range(5)]
    page = c.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == ids[::-1][:2] and page.has_more
    for j in page.data:
        validate_job(j)
    nxt = c.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert [j.id for j in nxt.data] == ids[::-1][2:4]
    assert [j.id for j in c.fine_tuning.jobs.list(limit=2, metadata={"batch": "paging"})] == ids[::-1]
    everything = [j.id for j in c.fine_tuning.jobs.list(limit=3)]  # the SDK follows has_more/after
    assert everything[:5] == ids[::-1] and len(everything) == len(set(everything))
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.list(after="ftjob-unknown")
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.list(limit=0)
    assert e.value.body["param"] == "limit"

    wait_for(c, ids[0], lambda j: j.status == "queued", timeout=60)
    events = c.fine_tuning.jobs.list_events(ids[0], limit=1)
    assert len(events.data) == 1 and events.has_more
    all_events = list(c.fine_tuning.jobs.list_events(ids[0], limit=1))
    for e in all_events:
        FineTuningJobEvent.model_validate(e.model_dump())
    assert [e.message for e in all_events][-1].startswith("Created fine-tuning job")
    assert len(all_events) == 3  # created, validating, validated
    for job_id in ids:
        c.fine_tuning.jobs.cancel(job_id)
