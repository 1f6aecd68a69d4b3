"""`tuneforge serve ... --db URL --no-jobs-worker --max-file-bytes N` wires the jobs API into the server command."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.helpers import wait_for_health
from tests.jobs.conftest import chat_rows, client, jsonl_bytes, wait_for

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parents[2]


def test_serve_command_has_the_jobs_api_on_its_database(tiny_dir, tmp_path):
    from tuneforge.serve.server import free_port

    port = free_port()
    db = tmp_path / "state" / "jobs.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "serve", str(tiny_dir), "--port", str(port),
                             "--db", f"sqlite:///{db}", "--no-jobs-worker", "--max-file-bytes", "2048"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(proc, url, lambda: (tmp_path / "serve.log").read_text())
        c = client(type("S", (), {"url": url})())
        f = c.files.create(file=("t.jsonl", io.BytesIO(jsonl_bytes(chat_rows(10)))), purpose="fine-tune")
        assert (db.parent / "files" / f"{f.id}.jsonl").is_file()  # beside the --db file
        with pytest.raises(openai.APIStatusError) as e:
            c.files.create(file=("t.jsonl", io.BytesIO(jsonl_bytes(chat_rows(100)))), purpose="fine-tune")
        assert e.value.status_code == 413
        job = c.fine_tuning.jobs.create(model=str(tiny_dir), training_file=f.id)
        assert wait_for(c, job.id, lambda j: j.status != "validating_files", timeout=60).status == "queued"
        time.sleep(1.5)
        assert c.fine_tuning.jobs.retrieve(job.id).status == "queued"  # --no-jobs-worker: nothing takes it
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
