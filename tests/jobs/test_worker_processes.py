"""`tuneforge jobs worker` processes on the server's database: SIGKILL one mid-job and start another (the job
resumes from its checkpoint and succeeds); two workers never train the same job; SIGTERM stops a worker cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jobs.conftest import TINY, chat_rows, client, jobs_server, upload, wait_for

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parents[2]


def _worker(root: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "jobs", "worker", "--db",
                             f"sqlite:///{root / 'tuneforge.db'}", "--poll-interval", "0.2", *extra],
                            env=env, stderr=open(log, "ab"), stdout=subprocess.DEVNULL)


def _steps(run: Path) -> list[int]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def test_a_killed_worker_s_job_is_resumed_by_the_next_worker(jobs_base, tmp_path):
    with jobs_server(jobs_base, tmp_path, worker=False) as (srv, api):
        c = client(srv)
        job = c.fine_tuning.jobs.create(model=str(jobs_base), training_file=upload(c, chat_rows(24)).id,
                                        extra_body={"tuneforge": {**TINY, "max_steps": 16}})
        first = _worker(tmp_path, tmp_path / "w1.log", "--lease-seconds", "3")
        try:
            deadline = time.monotonic() + 300
            while not c.fine_tuning.jobs.checkpoints.list(job.id).data:  # it has saved a checkpoint
                assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "w1.log").read_text()
                time.sleep(0.1)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        stuck = api.store.get_job(job.id)
        assert stuck.status == "running" and stuck.worker_id is not None  # nobody will finish it now...
        killed_at = max(_steps(tmp_path / "runs" / job.id))
        assert killed_at < 16

        second = _worker(tmp_path, tmp_path / "w2.log", "--lease-seconds", "3")
        try:
            done = wait_for(c, job.id, timeout=300)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        assert done.status == "succeeded", (done.error, (tmp_path / "w2.log").read_text())
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any("takes the job over from its last checkpoint" in m for m in messages)
        assert any("resumed by" in m for m in messages)
        assert api.store.get_job(job.id).restarts == 1
        steps = _steps(tmp_path / "runs" / job.id)
        assert steps == list(range(1, 17))  # resumed from the checkpoint: every step once, none lost
        run = tmp_path / "runs" / job.id  # finished like a CLI run: report and model card
        assert "<h1>Run report" in (run / "report.html").read_text()
        assert f"# {job.id}" in (run / "README.md").read_text()
        ckpts = [ck.step_number for ck in c.fine_tuning.jobs.checkpoints.list(job.id, limit=100)]
        assert len(ckpts) == len(set(ckpts)) and ckpts[0] == 16
        r = c.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}],
                                      max_tokens=4)
        assert r.model == done.fine_tuned_model


def test_two_workers_on_one_database_never_take_the_same_job(jobs_base, tmp_path):
    with jobs_server(jobs_base, tmp_path, worker=False) as (srv, api):
        c = client(srv)
        f = upload(c, chat_rows(12))
        ids = [c.fine_tuning.jobs.create(model=str(jobs_base), training_file=f.id,
                                         extra_body={"tuneforge": {**TINY, "max_steps": 2}}).id for _ in range(4)]
        workers = [_worker(tmp_path, tmp_path / f"w{i}.log") for i in range(2)]
        try:
            jobs = [wait_for(c, job_id, timeout=600) for job_id in ids]
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            codes = [w.wait(timeout=60) for w in workers]
        assert codes == [0, 0]
        assert [j.status for j in jobs] == ["succeeded"] * 4
        for job_id in ids:
            messages = [e.message for e in c.fine_tuning.jobs.list_events(job_id, limit=100)]
            starts = [m for m in messages if m.startswith("Fine-tuning job started by")]
            assert len(starts) == 1, messages  # one worker, once
            assert not any("takes the job over" in m or "resumed" in m for m in messages)
            assert _steps(tmp_path / "runs" / job_id) == [1, 2]
        assert len({j.fine_tuned_model for j in jobs}) == 4
