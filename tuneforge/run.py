"""The run directory: what a run wrote and what later steps (merge, generate, eval, serve) read back.

Layout: config.yaml, data.json, metrics.jsonl, checkpoints/, adapter/ or model/, run.json, README.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneforge.errors import TuneforgeError

SCHEMA = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Run:
    path: Path
    config: dict
    info: dict

    @property
    def adapter(self) -> Path | None:
        p = self.path / "adapter"
        return p if (p / "adapter_config.json").is_file() else None

    @property
    def model(self) -> Path | None:
        p = self.path / "model"
        return p if (p / "config.json").is_file() else None


def is_run(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file()


def read_run(path: str | Path) -> Run:
    p = Path(path)
    if not is_run(p):
        raise TuneforgeError(f"{p}: not a tuneforge run directory (no run.json)")
    info = json.loads((p / "run.json").read_text())
    cfg = yaml.safe_load((p / "config.yaml").read_text()) if (p / "config.yaml").is_file() else {}
    return Run(p, cfg, info)


def read_metrics(path: str | Path) -> list[dict]:
    f = Path(path) / "metrics.jsonl"
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def model_card(cfg: dict, info: dict, data: dict) -> str:
    """A Hugging Face-style README.md: base, data, hyperparameters, results."""
    hp = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg.items() if k not in ("data", "val_data", "output"))
    res = info.get("results", {})
    results = "\n".join(f"- {k}: {v}" for k, v in res.items()) or "- (none recorded)"
    files = "\n".join(f"- `{d['path']}`: {d['examples']} examples, sha256 `{d['sha256'][:16]}…`"
                      for d in data.get("files", []))
    how = ("```python\nfrom peft import AutoPeftModelForCausalLM\n"
           f"model = AutoPeftModelForCausalLM.from_pretrained(\"{info.get('run_dir', '.')}/adapter\")\n```"
           if info.get("adapter") else
           "```python\nfrom transformers import pipeline\n"
           f"pipe = pipeline(\"text-generation\", model=\"{info.get('run_dir', '.')}/model\")\n```")
    return f"""---
base_model: {info.get('base_path', cfg.get('base'))}
library_name: {'peft' if info.get('adapter') else 'transformers'}
tags: [tuneforge, {cfg.get('method')}]
---
# {Path(info.get('run_dir', 'run')).name}

Fine-tuned with tuneforge {info.get('tuneforge_version')} from `{cfg.get('base')}` by **{cfg.get('method')}**.

## Data
{files}
- train/val examples used: {data.get('train_examples')} / {data.get('val_examples')} (split seed {cfg.get('seed')})

## Results
{results}

## Hyperparameters
| key | value |
|---|---|
{hp}

## Use
{how}
"""
