"""Fixtures for the jobs API: a tiny base whose answers vary, chat training files, and `tuneforge serve`'s app with
the jobs routes on a free loopback port over a real SQLite database."""

from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests.serve.conftest import lively_tiny

TERMINAL = ("succeeded", "failed", "cancelled")
# a few short steps: each saves a checkpoint; validation every 2 steps
TINY = {"max_steps": 4, "save_steps": 2, "eval_steps": 2, "max_seq_len": 64, "early_stopping_patience": 0}


@pytest.fixture(scope="session")
def jobs_base(tmp_path_factory) -> Path:
    return lively_tiny(tmp_path_factory.mktemp("jobs") / "base")


def chat_rows(n: int, start: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"add {i} and {i + 1}"},
                          {"role": "assistant", "content": str(2 * i + 1)}]} for i in range(start, start + n)]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@contextmanager
def jobs_server(base: Path, root: Path, *, api_keys=(), **jobs_kw):
    """A real server around a real engine with the jobs API on sqlite:///ROOT/tuneforge.db; yields (srv, api)."""
    from tuneforge.jobs.api import JobsAPI
    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import BackgroundServer, build_engine

    engine = build_engine(str(base), device="cpu")
    api = JobsAPI(engine, f"sqlite:///{root / 'tuneforge.db'}", **jobs_kw)
    app = create_app(engine, api_keys=api_keys, routers=[api.router], body_limits=api.body_limits,
                     response_cache_size=0)
    with BackgroundServer(app) as srv:
        yield srv, api


def client(srv, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=60)


def upload(c: openai.OpenAI, rows: list[dict], name: str = "train.jsonl"):
    return c.files.create(file=(name, io.BytesIO(jsonl_bytes(rows))), purpose="fine-tune")


def wait_for(c: openai.OpenAI, job_id: str, until=lambda j: j.status in TERMINAL, timeout: float = 300):
    """Poll retrieve (as a client would) until `until(job)`; returns the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"timed out; job is {job.status}"
        time.sleep(0.2)


def validate_job(job) -> None:
    """The SDK's own type accepts the job (the one status beyond its Literal, `paused`, checked by name)."""
    from openai.types.fine_tuning import FineTuningJob

    d = job.model_dump()
    if d["status"] == "paused":
        d["status"] = "running"
    FineTuningJob.model_validate(d)
