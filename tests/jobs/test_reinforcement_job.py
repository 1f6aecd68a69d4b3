"""A reinforcement job through the real openai SDK: method={"type": "reinforcement", "reinforcement": {"grader":
..., "hyperparameters": ...}} trains `--objective grpo` with that grader, the job reports its method back, events
carry the GRPO metrics; the graders API (`fine_tuning.alpha.graders.run/validate`) answers in OpenAI's shapes, behind
auth; bad graders are 400s naming the field."""

from __future__ import annotations

import json

import openai
import pytest
import yaml

from tests.jobs.conftest import TINY, chat_rows, client, jobs_server, upload, validate_job, wait_for

GRADER = {"type": "multi", "name": "mix", "graders": {
    "exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"},
    "close": {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "evaluation_metric": "gleu"}},
    "calculate_output": "0.5 * exact + 0.5 * close"}
# the SDK types a multi grader's `graders` as one grader (its docs: an object of named graders), so its strict
# FineTuningJob validation rejects a job holding a multi grader; the job tests use a single grader
JOB_GRADER = GRADER["graders"]["close"]


def rl_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"add {i} and {i + 1}"}], "answer": str(2 * i + 1)}
            for i in range(n)]


@pytest.fixture(scope="module")
def server(jobs_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-jobs")
    with jobs_server(jobs_base, root, lease_seconds=30, api_keys=["k1"]) as (srv, api):
        yield srv, api, root


def test_reinforcement_job_end_to_end_with_the_openai_sdk(server, jobs_base):
    srv, api, root = server
    c = client(srv, "k1")
    f = upload(c, rl_rows(16), name="rl.jsonl")
    job = c.fine_tuning.jobs.create(
        model=str(jobs_base), training_file=f.id, suffix="rl", seed=3,
        method={"type": "reinforcement", "reinforcement": {"grader": JOB_GRADER, "hyperparameters": {
            "n_epochs": 1, "batch_size": 2, "compute_multiplier": 0.5}}},
        extra_body={"tuneforge": {**TINY, "max_completion_length": 6}})
    validate_job(job)
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "text_similarity"
    job = wait_for(c, job.id)
    assert job.status == "succeeded", job.error
    validate_job(job)
    assert job.method.reinforcement.hyperparameters.compute_multiplier == 0.5
    cfg = yaml.safe_load(open(f"{job.model_extra['tuneforge']['run_dir']}/config.yaml"))
    assert (cfg["objective"], cfg["num_generations"]) == ("grpo", 4)
    # OpenAI's batch_size counts prompts (2); the run's TRL-style batch counts their answers (2 x 4)
    assert cfg["per_device_train_batch_size"] == 8 and job.method.reinforcement.hyperparameters.batch_size == 2
    assert json.loads(open(cfg["grader"]).read())["evaluation_metric"] == "gleu"
    metrics = [e for e in c.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert metrics and all({"reward", "reward_std", "zero_std_groups", "completion_length"} <= set(e.data)
                           for e in metrics if "train_loss" in e.data)
    assert any("val_reward" in e.data for e in metrics)


def test_reinforcement_job_errors(server, jobs_base):
    srv, api, root = server
    c = client(srv, "k1")
    f = upload(c, rl_rows(12))
    bad = {**GRADER, "calculate_output": "exact + nope"}
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id,
                                  method={"type": "reinforcement", "reinforcement": {"grader": bad}})
    assert e.value.body["param"] == "method.reinforcement.grader.calculate_output"
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id, method={"type": "reinforcement"})
    assert e.value.body["param"] == "method.reinforcement.grader"
    sft = upload(c, chat_rows(12))
    job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=sft.id,
                                    method={"type": "reinforcement", "reinforcement": {"grader": JOB_GRADER}})
    job = wait_for(c, job.id)
    assert job.status == "failed" and job.error.code == "invalid_file_format" and "RL rows" in job.error.message


def test_graders_run_and_validate_routes(server):
    from openai.types.fine_tuning.alpha import GraderRunResponse

    srv, api, root = server
    c = client(srv, "k1")
    r = c.fine_tuning.alpha.graders.run(grader=GRADER, model_sample="7", item={"answer": "7"})
    assert isinstance(r, GraderRunResponse) and r.reward == 1.0 and r.metadata.type == "multi"
    assert r.sub_rewards == {"exact": 1.0, "close": 1.0}
    py = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    raise ValueError('no')\n"}
    r = c.fine_tuning.alpha.graders.run(grader=py, model_sample="x")
    assert r.reward == 0.0 and r.metadata.errors.python_grader_runtime_error
    v = c.fine_tuning.alpha.graders.validate(grader=GRADER["graders"]["exact"])
    assert v.grader.type == "string_check"
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.alpha.graders.validate(grader={**GRADER["graders"]["exact"], "operation": "regex"})
    assert e.value.body["param"] == "grader.operation" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        client(srv, "wrong").fine_tuning.alpha.graders.validate(grader=GRADER["graders"]["exact"])
