"""Distill a trained run (the teacher) into a smaller student; the result is an ordinary run directory.

`tuneforge optimize distill --teacher RUN --student BASE_OR_SPEC --data F --output OUT [--key value ...]`

Sequence-level knowledge distillation (Kim & Rush, 2016): the teacher answers every training prompt
greedily, and the student is fine-tuned on those answers by the one training recipe (`train.recipe`, its
packing, loss, validation, early stopping and checkpoints unchanged). It needs only the teacher's outputs, so
the student may have another tokenizer or architecture, and the loss stays the recipe's own. Validation uses
the data's real answers, so early stopping and the report measure the task, not agreement with the teacher.

Students: any `--base` (alias, model dir, hub id, .gguf), a run directory (its model/, e.g. from
`optimize prune --drop-layers`), or `drop-layers:K`: the teacher's merged model with the K least influential
layers removed (optimize.prune), saved once under $TUNEFORGE_HOME/students/. The student trains with
`method: full` and `learning_rate: 5e-5` unless overridden.
OUT also holds teacher_answers.jsonl (what the student learned from) and optimize.json (the report).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.methods import ALL_WEIGHTS
from tuneforge.run import is_run, read_json, read_run, write_atomic_dir, write_atomic_text, write_json

DEFAULTS = {"method": ALL_WEIGHTS, "learning_rate": 5e-5}


def student_base(spec: str, teacher) -> str:
    """The --base the student trains from."""
    if spec.startswith("drop-layers:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--student {spec}: expected drop-layers:K with K an integer") from None
        return str(_layers_removed(teacher, k))
    if is_run(spec):
        run = read_run(spec)
        if run.model is None:
            raise ConfigError(f"--student {spec}: the run has no model/ (run `tuneforge export merge {spec}`)")
        return str(run.model)
    return spec


def _layers_removed(teacher, k: int) -> Path:
    """The teacher's merged model minus k layers, cached by teacher weights and k."""
    from tuneforge.export.merge import merged_model
    from tuneforge.export.verify import golden_samples
    from tuneforge.paths import home
    from tuneforge.optimize.prune import block_influence, remove_layers

    weights = teacher.adapter or teacher.model
    key = hashlib.sha256(f"{teacher.path.resolve()}:{sorted((f.name, f.stat().st_mtime_ns) for f in weights.iterdir())}"
                         .encode()).hexdigest()[:12]
    out = home() / "students" / f"{teacher.path.name}-{key}-drop{k}"
    if (out / "config.json").is_file():
        return out
    model, tok = merged_model(teacher)
    samples, _ = golden_samples(teacher)
    dropped = remove_layers(model, k, block_influence(model, tok, samples[:16]))
    print(f"tuneforge: student = teacher without layers {dropped} → {out}", file=sys.stderr)

    def write(d: Path) -> None:
        model.save_pretrained(d)
        tok.save_pretrained(d)

    write_atomic_dir(out, write)
    return out


def teacher_answers(teacher, samples: list, *, progress: bool) -> list[str]:
    """The teacher's greedy answers to the samples' prompts (batched, with its saved chat template)."""
    from tqdm.auto import tqdm

    from tuneforge.eval.harness import Loaded, generate
    from tuneforge.export.merge import merged_model

    model, tok = merged_model(teacher)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    bar = tqdm(total=len(samples), desc="teacher answers", disable=not progress, file=sys.stderr)
    # the run's answer budget (twice its longest training answer): a teacher that never stops costs no more
    answers, _ = generate(Loaded(model, tok, str(teacher.path)), samples, max_new_tokens=teacher.max_new_tokens,
                          progress=bar.update)
    bar.close()
    return answers


def distill(teacher_dir: str | Path, student: str, data: str | Path, output: str | Path, *,
            overrides: dict | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Train the student on the teacher's answers; returns (run dir, teacher-vs-student report)."""
    from dataclasses import replace

    from tuneforge.config import load_config
    from tuneforge.data.load import load_samples
    from tuneforge.eval.harness import load_for_inference
    from tuneforge.finish import finish_run
    from tuneforge.export.merge import merged_model
    from tuneforge.optimize.measure import compare, measure
    from tuneforge.train.objectives.sft import holdout
    from tuneforge.train.recipe import check_output, prepare, train

    teacher = read_run(teacher_dir)
    cfg = load_config(None, {**DEFAULTS, **(overrides or {}), "data": str(data), "output": str(output)})
    out = check_output(cfg, resume=False)  # before minutes of teacher generation
    samples = load_samples(cfg.data)
    if any(s.messages is None for s in samples):
        raise ConfigError(f"{data}: distillation needs prompts to answer (chat, prompt/completion, alpaca or "
                          "classification rows), not plain text")
    train_s, val_s = (samples, load_samples(cfg.val_data)) if cfg.val_data else \
        holdout(samples, cfg.val_split, cfg.seed)
    cfg.base = student_base(student, teacher)
    answers = teacher_answers(teacher, train_s, progress=progress)
    taught = [replace(s, messages=s.prompt_messages + [{"role": "assistant", "content": a}], label=None)
              for s, a in zip(train_s, answers)]
    prepared = prepare(cfg, split=(taught, val_s))
    train(cfg, progress=progress, prepared=prepared)
    write_atomic_text(out / "teacher_answers.jsonl", "".join(
        json.dumps({"messages": s.messages, "source": s.where}) + "\n" for s in taught))

    held = val_s or train_s[:64]
    tmodel, ttok = merged_model(teacher)
    before = measure(tmodel, ttok, held[:64], max_seq_len=cfg.max_seq_len)
    del tmodel
    s = load_for_inference(out)
    after = measure(s.model, s.tokenizer, held[:64], max_seq_len=cfg.max_seq_len)
    report = {"operation": "distill", "teacher_run": str(teacher.path), "output": str(out),
              "settings": {"student": student, "student_base": cfg.base, "kind": "sequence-level (teacher's "
                           "greedy answers)", "teacher_max_new_tokens": teacher.max_new_tokens},
              "heldout_source": "validation examples (real answers)", "teacher": before, "student": after,
              "ratios": compare(before, after)}
    write_json(out / "optimize.json", report)
    info = read_json(out / "run.json")
    info["distilled_from"] = str(teacher.path)
    write_json(out / "run.json", info)  # run.json stays last-written: the run is finished as before
    finish_run(out)  # report.html and the model card (with distilled_from), as for every run
    return out, report
