"""The whole fine-tuning flow with the real openai SDK against `tuneforge serve` (in-process worker) on loopback:
files.create → fine_tuning.jobs.create → poll retrieve → list_events → checkpoints.list →
chat.completions.create(model=job.fine_tuned_model); then cancel and pause/resume while a job trains."""

from __future__ import annotations

import json
import time

import openai
import pytest
from openai.types import FileObject, Model
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.jobs.conftest import TINY, chat_rows, client, jobs_server, upload, validate_job, wait_for


@pytest.fixture(scope="module")
def server(jobs_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    with jobs_server(jobs_base, root, lease_seconds=30) as (srv, api):
        yield srv, api, root


def _answer(c, model: str, prompt: str = "add 2 and 3") -> str:
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=8,
                                  temperature=0)
    ChatCompletion.model_validate(r.model_dump())
    assert r.model == model
    return r.choices[0].message.content


def test_files_create_jobs_create_poll_events_checkpoints_chat(server, jobs_base):
    srv, api, root = server
    c = client(srv)
    f = upload(c, chat_rows(24))
    FileObject.model_validate(f.model_dump())
    job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id, suffix="adder", seed=3,
                                    hyperparameters={"learning_rate_multiplier": 10},  # 4 steps must show
                                    extra_body={"tuneforge": {**TINY, "lora_alpha": 512,
                                                              "target_modules": "all-linear"}})
    validate_job(job)
    seen = [job.status]
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.2)
        job = c.fine_tuning.jobs.retrieve(job.id)
        validate_job(job)
        if job.status != seen[-1]:
            seen.append(job.status)
        if job.status == "running":
            assert job.estimated_finish is None or job.estimated_finish >= job.created_at
    assert job.status == "succeeded", job.error
    order = ["validating_files", "queued", "running", "succeeded"]
    assert seen[0] == "validating_files" and seen == sorted(seen, key=order.index), seen  # never backwards
    suffix_id = job.id.removeprefix("ftjob-")
    assert job.fine_tuned_model == f"ft:{jobs_base.name}:adder:{suffix_id}"
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.estimated_finish is None
    assert job.hyperparameters.n_epochs == 5 and job.hyperparameters.batch_size == 8  # "auto" for 24 examples
    assert job.hyperparameters.learning_rate_multiplier == 10

    events = list(c.fine_tuning.jobs.list_events(job.id, limit=100))
    for e in events:
        FineTuningJobEvent.model_validate(e.model_dump())
    assert events[0].message == "The job has successfully completed"
    metrics = [e for e in events if e.type == "metrics"]
    assert sorted(e.data["step"] for e in metrics) == [1, 2, 3, 4]
    assert all(e.data["total_steps"] == 4 and e.data["train_loss"] > 0 for e in metrics)
    assert {e.data["step"] for e in metrics if "valid_loss" in e.data} == {2, 4}
    assert max(e.data["trained_tokens"] for e in metrics) == job.trained_tokens

    ckpts = list(c.fine_tuning.jobs.checkpoints.list(job.id))
    for ck in ckpts:
        FineTuningJobCheckpoint.model_validate(ck.model_dump())
    assert [ck.step_number for ck in ckpts] == [4, 2]  # newest first: the saved step, then the final one
    assert ckpts[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-4"
    by_step = {e.data["step"]: e.data for e in metrics}
    for ck in ckpts:
        assert ck.metrics.train_loss == pytest.approx(by_step[ck.step_number]["train_loss"])
        assert ck.metrics.valid_loss == pytest.approx(by_step[ck.step_number]["valid_loss"])

    models = {m.id: m for m in c.models.list()}
    assert models[job.fine_tuned_model].parent == str(jobs_base)
    Model.model_validate(c.models.retrieve(job.fine_tuned_model).model_dump())

    # the job's run directory is an ordinary tuneforge run, and the server answers with its adapter
    from tuneforge.eval.harness import generate, load_for_inference
    from tuneforge.registry import list_runs

    run = root / "runs" / job.id
    assert job.tuneforge["run_dir"] == str(run) and (run / "adapter" / "adapter_model.safetensors").is_file()
    listed = {r["id"]: r for r in list_runs(root / "runs")}
    assert listed[job.id]["status"] == "finished" and listed[job.id]["base"] == str(jobs_base)
    info = json.loads((run / "run.json").read_text())
    assert info["steps"] == 4 and info["train_tokens"] == job.trained_tokens
    served = _answer(c, job.fine_tuned_model)
    expected, _ = generate(load_for_inference(str(run)), [[{"role": "user", "content": "add 2 and 3"}]],
                           max_new_tokens=8, batch_size=1)
    assert served == expected[0]
    assert served != _answer(c, str(jobs_base))  # the adapter changed the answer: it really is the tuned model

    with pytest.raises(openai.BadRequestError):  # a finished job cannot be cancelled
        c.fine_tuning.jobs.cancel(job.id)


def _wait_for_step(c, job_id: str, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(e.type == "metrics" and e.data["step"] >= step
                  for e in c.fine_tuning.jobs.list_events(job_id, limit=20).data):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _released(api, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while api.store.get_job(job_id).worker_id is not None:
        assert time.monotonic() < deadline, "the worker did not let go of the job"
        time.sleep(0.1)


def test_cancel_while_running_stops_training_between_steps(server, jobs_base):
    srv, api, root = server
    c = client(srv)
    job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=upload(c, chat_rows(24)).id,
                                    extra_body={"tuneforge": {**TINY, "max_steps": 500}})
    _wait_for_step(c, job.id, 1)
    cancelled = c.fine_tuning.jobs.cancel(job.id)
    validate_job(cancelled)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    _released(api, job.id)
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=100))
    stopped = next(e for e in events if e.message.startswith("Training stopped at step"))
    last = max(e.data["step"] for e in events if e.type == "metrics")
    assert f"step {last}," in stopped.message and last < 500
    time.sleep(1)
    assert c.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert not (root / "runs" / job.id / "run.json").exists()
    assert max(e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics") \
        == last  # nothing trained after the cancel
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.cancel(job.id)
    assert e.value.status_code == 400


def test_pause_checkpoints_and_resume_continues_to_success(server, jobs_base):
    srv, api, root = server
    c = client(srv)
    job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=upload(c, chat_rows(24)).id,
                                    extra_body={"tuneforge": {**TINY, "max_steps": 12, "save_steps": 100}})
    _wait_for_step(c, job.id, 2)
    paused = c.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"  # OpenAI's status after /pause (beyond the SDK's Literal)
    validate_job(paused)
    _released(api, job.id)
    step = next(int(e.message.split()[4].rstrip(",")) for e in c.fine_tuning.jobs.list_events(job.id, limit=100)
                if e.message.startswith("Training stopped at step"))
    assert (root / "runs" / job.id / "checkpoints" / f"step-{step}").is_dir()
    assert [ck.step_number for ck in c.fine_tuning.jobs.checkpoints.list(job.id)] == [step]
    assert c.fine_tuning.jobs.retrieve(job.id).status == "paused"

    assert c.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_for(c, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("resumed by" in m for m in messages)
    rows = [json.loads(x) for x in (root / "runs" / job.id / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))  # every step exactly once
    assert done.fine_tuned_model in {m.id for m in c.models.list()}
