"""Shared fixtures: a tiny random model saved as a transformers dir, and small example files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tuneforge.models.tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]
# Packages whose tests start servers, worker processes, browsers or exports: all marked `integration`, so the
# quick loop (`-m "not slow and not cli and not integration"`) is the core's unit tests, under a minute.
INTEGRATION_DIRS = ("serve", "jobs", "monitor", "export", "optimize", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if len(rel) > 1 and rel[0] in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = r.randint(0, 99), r.randint(0, 99)
        rows.append({"prompt": f"add {a} and {b}", "completion": str(a + b)})
    return rows


@pytest.fixture
def pc_file(tmp_path) -> Path:
    """A prompt/completion JSONL file of 64 rows."""
    return write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(64))


def train_tiny_run(base: Path, out: Path, *, rows: int = 120, seed: int = 0, **overrides) -> Path:
    """A LoRA run on the tiny model, trained in-process (a couple of seconds): a real run directory."""
    from tuneforge.config import TrainConfig
    from tuneforge.train.recipe import train

    data = write_jsonl(out.parent / f"{out.name}-train.jsonl", arithmetic_rows(rows, seed=seed))
    cfg = TrainConfig(base=str(base), data=str(data), output=str(out), num_train_epochs=1, learning_rate=1e-3,
                      seed=seed, **overrides)
    return train(cfg, progress=False)


@pytest.fixture(scope="session")
def tiny_lora_run(tiny_dir, tmp_path_factory) -> Path:
    """A finished tiny LoRA run, merged into RUN/model (shared by tests that only read it)."""
    from tuneforge.export.merge import merge

    run = train_tiny_run(tiny_dir, tmp_path_factory.mktemp("lora") / "run")
    merge(run)
    return run


@pytest.fixture(scope="session")
def export_source_run(tiny_dir, tmp_path_factory) -> Path:
    """A tiny LoRA run (6 steps, not merged) that export and optimize tests write exports into."""
    return train_tiny_run(tiny_dir, tmp_path_factory.mktemp("export-src") / "run", max_steps=6)


def wait_for_health(proc, url: str, log=lambda: "", timeout: float = 120) -> None:
    """Block until a `tuneforge serve` subprocess answers /health; fail with its log if it dies or hangs."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log()
        time.sleep(0.2)
