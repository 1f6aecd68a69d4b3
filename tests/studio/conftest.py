"""Fixtures for the studio: `tuneforge serve`'s app as the serve command assembles it (jobs API, monitoring,
studio), around a tiny base, on a free loopback port over a real SQLite database, with an API key."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import lively_tiny

KEY = "sk-studio-test"
TERMINAL = ("succeeded", "failed", "cancelled")
# a few short steps: each saves a checkpoint; validation every 2 steps
TINY = {"max_steps": 6, "save_steps": 2, "eval_steps": 2, "max_seq_len": 64, "early_stopping_patience": 0}


@pytest.fixture(scope="session")
def studio_base(tmp_path_factory) -> Path:
    return lively_tiny(tmp_path_factory.mktemp("studio") / "base")


def chat_rows(n: int, start: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"add {i} and {i + 1}"},
                          {"role": "assistant", "content": str(2 * i + 1)}]} for i in range(start, start + n)]


def jsonl_bytes(rows: list) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


@contextmanager
def studio_server(base: Path, root: Path, *, api_keys=(KEY,), runs_dirs=(), port: int | None = None):
    """The app `tuneforge serve BASE --db sqlite:///ROOT/tuneforge.db --api-key KEY` builds (service.build_server);
    yields (srv, app)."""
    from tuneforge.serve.server import BackgroundServer
    from tuneforge.service import ServerOptions, build_server

    server = build_server(ServerOptions(str(base), api_keys=list(api_keys), device="cpu", response_cache_size=0,
                                        db=f"sqlite:///{root / 'tuneforge.db'}", runs_dirs=list(runs_dirs)))
    with BackgroundServer(server.app, port=port) as srv:
        yield srv, server.app


def api(srv, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def upload(c: httpx.Client, rows: list, name: str = "train.jsonl") -> str:
    r = c.post("/v1/files", files={"file": (name, jsonl_bytes(rows))}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def poll(c: httpx.Client, url: str, done, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(url)
        assert r.status_code == 200, r.text
        obj = r.json()
        if done(obj):
            return obj
        assert time.monotonic() < deadline, f"timed out: {obj}"
        time.sleep(0.3)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err
