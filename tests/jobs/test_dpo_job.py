"""A DPO job through the real openai SDK: method={"type": "dpo", "dpo": {"hyperparameters": {"beta": ...}}} trains
`--objective dpo` with that beta, the job reports its method back, events carry the preference metrics, and the
tuned adapter answers chat completions; bad requests are 400s naming the field."""

from __future__ import annotations

import openai
import pytest
import yaml

from tests.jobs.conftest import TINY, client, jobs_server, upload, validate_job, wait_for
from tests.train.test_dpo_train import preference_rows


@pytest.fixture(scope="module")
def server(jobs_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo-jobs")
    with jobs_server(jobs_base, root, lease_seconds=30) as (srv, api):
        yield srv, api, root


def test_dpo_job_end_to_end_with_the_openai_sdk(server, jobs_base):
    srv, api, root = server
    c = client(srv)
    f = upload(c, preference_rows(24), name="prefs.jsonl")
    job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id, suffix="pref", seed=1,
                                    method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25,
                                                                                         "n_epochs": 1}}},
                                    extra_body={"tuneforge": TINY})
    validate_job(job)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
    job = wait_for(c, job.id)
    assert job.status == "succeeded", job.error
    validate_job(job)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
    cfg = yaml.safe_load(open(f"{job.model_extra['tuneforge']['run_dir']}/config.yaml"))
    assert (cfg["objective"], cfg["beta"]) == ("dpo", 0.25)
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all({"reward_margin", "accuracy", "logp_chosen", "train_loss"} <= set(e.data)
                           for e in metrics)
    assert any("val_accuracy" in e.data for e in metrics)
    r = c.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "add 2 and 3"}],
                                  max_tokens=4, temperature=0)
    assert r.model == job.fine_tuned_model


def test_a_dpo_job_on_chat_rows_fails_validation_and_bad_beta_is_a_400(server, jobs_base):
    from tests.jobs.conftest import chat_rows

    srv, api, root = server
    c = client(srv)
    f = upload(c, chat_rows(12))
    job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id, method={"type": "dpo"})
    job = wait_for(c, job.id)
    assert job.status == "failed" and job.error.code == "invalid_file_format" and "preference" in job.error.message
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id,
                                  method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}})
    assert e.value.body["param"] == "method.dpo.hyperparameters.beta"
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id, method={"type": "rlhf"})
    assert e.value.body["param"] == "method.type"
