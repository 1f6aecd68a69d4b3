"""Merge a run's LoRA adapter into its base and write `RUN/model/`, a plain transformers model.

The result loads with the guide's own `pipeline("text-generation", model="RUN/model")`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.run import read_run
from tuneforge.train.checkpoint import write_atomic_dir


def merge(run_dir: str | Path, output: str | Path | None = None) -> Path:
    from peft import PeftModel

    from tuneforge.models.load import load_base

    run = read_run(run_dir)
    out = Path(output) if output else run.path / "model"
    if run.adapter is None:
        if run.model is not None:
            print(f"tuneforge: {run.path} is a full fine-tune; its model/ is already a merged model",
                  file=sys.stderr)
            return run.model
        raise TuneforgeError(f"{run.path}: run has no adapter/ to merge")
    from tuneforge import methods

    if not methods.get(run.info["method"]).mergeable:
        raise TuneforgeError(f"{run.path}: {run.info['method']} adapters cannot be merged into model weights, so "
                             "transformers pipeline(), vLLM and GGUF cannot load them; use "
                             "peft.PeftModel.from_pretrained(base, RUN/adapter) or `tuneforge generate RUN`")
    base = load_base(run.info["base"], device="cpu")  # full precision: a QLoRA adapter merges onto fp32 weights
    merged = PeftModel.from_pretrained(base.model, str(run.adapter)).merge_and_unload()
    merged.generation_config.eos_token_id = base.tokenizer.eos_token_id
    merged.generation_config.pad_token_id = base.tokenizer.pad_token_id

    def write(d: Path) -> None:
        merged.save_pretrained(d)
        base.tokenizer.save_pretrained(d)  # carries the chat template the model was trained with

    write_atomic_dir(out, write)
    return out
