"""Slow: the fine-tuning jobs flow on the real SmolLM2-135M-Instruct, served by `tuneforge serve`'s app with its
in-process worker: upload the SQL example (and its validation split), train a few steps, chat with the result."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from tests.jobs.conftest import client, jobs_server, validate_job, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_fine_tuning_job_on_smollm2(tmp_path):
    with jobs_server("smollm2-135m-instruct", tmp_path) as (srv, api):
        c = client(srv)
        train = c.files.create(file=open(ROOT / "examples/sql/train.jsonl", "rb"), purpose="fine-tune")
        val = c.files.create(file=open(ROOT / "examples/sql/val.jsonl", "rb"), purpose="fine-tune")
        job = c.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=train.id,
                                        validation_file=val.id, suffix="sql", hyperparameters={"batch_size": 4},
                                        extra_body={"tuneforge": {"max_steps": 2, "save_steps": 1, "eval_steps": 2,
                                                                  "max_seq_len": 256}})
        done = wait_for(c, job.id, timeout=900)
        validate_job(done)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model.startswith("ft:smollm2-135m-instruct:sql:")
        assert done.hyperparameters.n_epochs == 3  # "auto" for 600 examples
        assert [ck.step_number for ck in c.fine_tuning.jobs.checkpoints.list(job.id)] == [2, 1]
        metrics = [e for e in c.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
        assert sorted(e.data["step"] for e in metrics) == [1, 2]
        assert any("valid_loss" in e.data for e in metrics)
        r = c.chat.completions.create(model=done.fine_tuned_model, max_tokens=30, temperature=0,
                                      messages=[{"role": "user", "content": "Translate to SQL: Show all users"}])
        ChatCompletion.model_validate(r.model_dump())
        assert r.choices[0].message.content
        assert done.fine_tuned_model in {m.id for m in c.models.list()}
