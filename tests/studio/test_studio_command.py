"""`tuneforge studio`: one command starts the server with the page and prints its URL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.cli, pytest.mark.integration]


def test_tuneforge_studio_serves_the_page_and_prints_its_url(studio_base, tmp_path):
    from tuneforge.serve.server import free_port

    port = free_port()
    log = tmp_path / "studio.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TUNEFORGE_HOME": str(tmp_path)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "studio", str(studio_base), "--port",
                                 str(port), "--no-open", "--api-key", "k1", "--db",
                                 f"sqlite:///{tmp_path / 'db.sqlite'}"], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        url = f"http://127.0.0.1:{port}/studio"
        deadline = time.monotonic() + 180
        while not any(line.startswith(f"studio: {url}") for line in log.read_text().splitlines()):  # once up
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert "<title>tuneforge studio</title>" in httpx.get(url).text
        assert httpx.get(f"http://127.0.0.1:{port}/v1/tuneforge/runs").status_code == 401
        r = httpx.get(f"http://127.0.0.1:{port}/v1/tuneforge/runs", headers={"Authorization": "Bearer k1"})
        assert r.status_code == 200 and r.json()["data"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
