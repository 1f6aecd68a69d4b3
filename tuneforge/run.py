"""The run directory, in one place: atomic writes, reading back, the git commit, the model card, "is this a run".

Layout (ARCHITECTURE.md has the whole contract): config.yaml, data.json, metrics.jsonl, checkpoints/,
adapter/ or model/, run.json, README.md, eval.json, report.html. Every package reads and writes runs through here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from tuneforge.errors import TuneforgeError

SCHEMA = 1
FILE_MODE = 0o644  # what a user's umask would give a file they wrote themselves


# --- atomic writes ---------------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _normal_permissions(root: Path) -> None:
    """Files written through temp files (safetensors, mkstemp) can come out 0600; runs are shared artefacts."""
    for f in ([root] if root.is_file() else root.rglob("*")):
        if f.is_file():
            os.chmod(f, FILE_MODE)


def write_atomic_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_dir), fsync its files, then rename tmp_dir to `final` (replacing it).

    A kill at any moment leaves either the old directory or the new one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    _normal_permissions(tmp)
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(tmp)
    if final.exists():
        old = final.parent / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def write_atomic_text(path: Path, text: str) -> Path:
    """Write via a temp file + fsync + rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj) -> Path:
    return write_atomic_text(path, json.dumps(obj, indent=1))


def append_jsonl(path: Path, rec: dict) -> None:
    """One line per call, flushed: a crash loses at most the line being written (readers skip a torn tail)."""
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def record_git_commit(run_dir: str | Path) -> str | None:
    """HEAD of the git work tree holding the run dir (asked in its parent, which exists before the run dir),
    or None outside a work tree or without git. Call at run creation and store it as run.json["git_commit"]:
    asked later, HEAD may have moved on."""
    parent = Path(run_dir).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    out = res.stdout.strip()
    return out if res.returncode == 0 and len(out) == 40 else None


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
    def max_new_tokens(self) -> int:
        """The answer budget generate and the merged model's generation_config use by default."""
        return answer_budget(read_json(self.path / "data.json"))

    @property
    def model(self) -> Path | None:
        p = self.path / "model"
        return p if (p / "config.json").is_file() else None


def run_status(path: str | Path) -> str | None:
    """"finished" (run.json written), "incomplete" (training or interrupted: config.yaml only), or None
    when `path` is not a run directory at all. The one definition of "is this a run"."""
    p = Path(path)
    if (p / "run.json").is_file():
        return "finished"
    if (p / "config.yaml").is_file():
        return "incomplete"
    return None


def is_run(path: str | Path) -> bool:
    """A finished run: what generate, eval, export and serve can load."""
    return run_status(path) == "finished"


def read_run(path: str | Path) -> Run:
    p = Path(path)
    if not is_run(p):
        raise TuneforgeError(f"{p}: not a tuneforge run directory (no run.json)")
    return Run(p, read_config(p), read_json(p / "run.json"))


def read_json(path: str | Path) -> dict:
    """A JSON file of a run, {} when absent; a corrupt one is a one-line error naming the file."""
    p = Path(path)
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except json.JSONDecodeError as e:
        raise TuneforgeError(f"{p}: not valid JSON ({e})") from e


def read_config(path: str | Path) -> dict:
    f = Path(path) / "config.yaml"
    return (yaml.safe_load(f.read_text()) or {}) if f.is_file() else {}


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl rows; a torn last line (killed mid-write) is skipped, not an error."""
    f = Path(path) / "metrics.jsonl"
    if not f.is_file():
        return []
    rows = []
    for line in f.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# The answer length when nothing better is known (a base model, a run without answer statistics, a server request
# without max_tokens): the one default `generate`, `eval`, saved generation_config.json files and the server use.
DEFAULT_MAX_NEW_TOKENS = 256


def answer_budget(data_info: dict, default: int = DEFAULT_MAX_NEW_TOKENS) -> int:
    """max_new_tokens for a run's model: twice its longest training answer (at least 32, at most 2048), so
    an answer that never reaches the end-of-turn token stops near where a real answer would have."""
    longest = data_info.get("max_answer_tokens")
    return default if not longest else min(2048, max(32, 2 * int(longest)))


def run_name(path: str | Path) -> str:
    """A run's name: its directory's name. `tuneforge serve RUN` serves the run under it, `monitor drift` looks
    for it in the request log, reports title it."""
    return Path(path).resolve().name


def default_answer_length(target: str | Path) -> int:
    """max_new_tokens for TARGET when the caller sets none: a run's answer budget, else the default."""
    return read_run(target).max_new_tokens if is_run(target) else DEFAULT_MAX_NEW_TOKENS


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The finite numbers of a metrics dict (confusion matrices, per-label tables and NaNs left out)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def use_snippet(run_dir: str, *, adapter: bool) -> str:
    """How to use a run's output with the usual libraries (model card, README). Chat models must be given
    messages, so the chat template they were trained with is applied: a bare string skips it."""
    merged = f"{run_dir}/model"
    out = []
    if adapter:
        out.append("```python\nfrom peft import AutoPeftModelForCausalLM\n"
                   f"model = AutoPeftModelForCausalLM.from_pretrained(\"{run_dir}/adapter\")\n```\n\n"
                   f"Merged into plain weights (`tuneforge export merge {run_dir}` writes `{merged}`):")
    out.append(f"""```python
from transformers import pipeline
pipe = pipeline("text-generation", model="{merged}")  # greedy, as eval scored it (generation_config.json)
answer = pipe([{{"role": "user", "content": "..."}}])[0]["generated_text"][-1]["content"]

from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
llm = HuggingFacePipeline.from_model_id(model_id="{merged}", task="text-generation",
                                        pipeline_kwargs={{"return_full_text": False}})
answer = ChatHuggingFace(llm=llm).invoke("...").content  # the chat template is applied for you
```""")
    return "\n".join(out)


def model_card(cfg: dict, info: dict, data: dict) -> str:
    """A Hugging Face-style README.md: base, data, hyperparameters, results."""
    hp = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg.items() if k not in ("data", "val_data", "output"))
    res = info.get("results", {})
    results = "\n".join(f"- {k}: {v}" for k, v in res.items()) or "- (none recorded)"
    files = "\n".join(f"- `{d['path']}`: {d['examples']} examples, sha256 `{d['sha256'][:16]}…`"
                      for d in data.get("files", []))
    how = use_snippet(info.get("run_dir", "."), adapter=bool(info.get("adapter")))
    labels = info.get("labels")
    task = ("\n## Task: classification\nAnswers are one of these labels: " + ", ".join(f"`{x}`" for x in labels) +
            ".\n`tuneforge eval` and `tuneforge generate` answer with the most likely label (constrained "
            "prediction: each label's likelihood, end-of-turn token included, is scored given the prompt); "
            "`--free` generates text instead. Plain `transformers` generation is free text.\n") if labels else ""
    chosen = info.get("auto") or {}
    auto = ("\n## Settings chosen by tuneforge\n" + "\n".join(f"- {why}" for why in chosen.values()) + "\n"
            if chosen else "")
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
{task}
## Results
{results}

## Hyperparameters
| key | value |
|---|---|
{hp}
{auto}
## Use
{how}
"""
