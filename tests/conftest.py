"""Shared fixtures: a tiny random model saved as a transformers dir, and small example files."""

from __future__ import annotations

from pathlib import Path

import pytest

# the helpers live in tests/helpers.py; still importable from here for tests written before it
from tests.helpers import ROOT, arithmetic_rows, train_tiny_run, wait_for_health, write_jsonl  # noqa: F401
from tuneforge.models.tiny import save_tiny

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


@pytest.fixture
def pc_file(tmp_path) -> Path:
    """A prompt/completion JSONL file of 64 rows."""
    return write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(64))


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

