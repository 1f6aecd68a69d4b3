"""Fixtures for monitoring tests: a fresh SQLite database per test, and a monitored server on loopback."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'monitor.db'}"


@pytest.fixture
def database(db_url):
    from tuneforge.db import TableBase, connect
    from tuneforge.monitor import drift, feedback, requests  # noqa: F401 - declare every monitoring table

    engine = connect(db_url)
    TableBase.metadata.create_all(engine)
    return engine


@contextmanager
def monitored(target: str | Path, db_url: str, *, lora_modules=(), api_keys=(), settings=None, **app_kw):
    """A real server (uvicorn on 127.0.0.1, free port) with monitoring attached; yields (server, monitoring).
    Leaving the block shuts the app down, which drains the request log."""
    from tuneforge.monitor.attach import MonitorSettings, attach_monitoring
    from tuneforge.monitor.dashboard import OPEN_PATHS as DASHBOARD_PATHS
    from tuneforge.serve.app import OPEN_PATHS, create_app
    from tuneforge.serve.server import BackgroundServer, build_engine

    engine = build_engine(str(target), lora_modules=list(lora_modules), device="cpu")
    app = create_app(engine, api_keys=api_keys, open_paths=OPEN_PATHS | DASHBOARD_PATHS, **app_kw)
    s = settings or MonitorSettings()
    s.db = db_url
    mon = attach_monitoring(app, s)
    with BackgroundServer(app) as srv:
        yield srv, mon


@pytest.fixture(scope="session")
def lively_base(tmp_path_factory) -> Path:
    """A tiny random base whose answers vary (see tests/serve/conftest.py)."""
    from tests.serve.conftest import lively_tiny

    return lively_tiny(tmp_path_factory.mktemp("monitor") / "base")


def record(i: int = 0, **kw):
    """A RequestRecord as the server hands it to request hooks."""
    import time

    from tuneforge.serve.completions import RequestRecord

    base = dict(id=f"chatcmpl-{i:08d}", endpoint="chat.completions", model="m", created=time.time(), status=200,
                prompt=[{"role": "user", "content": f"question {i}"}], completions=[f"answer {i}"],
                finish_reasons=["stop"], prompt_tokens=10, completion_tokens=3, queue_time_s=0.001, ttft_s=0.01,
                latency_s=0.05)
    base.update(kw)
    return RequestRecord(**base)
