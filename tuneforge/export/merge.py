"""Merge a run's LoRA/QLoRA adapter into its full-precision base and write `RUN/model/` (plain transformers).

The result loads with the guide's own `pipeline("text-generation", model="RUN/model")`. A parity check
compares validation loss of the model as trained (e.g. adapter on a 4-bit base) with the merged model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.export import manifest
from tuneforge.run import read_run, write_atomic_dir

CHECK_EXAMPLES = 64


def _val_loss(model, tokenizer, samples, max_seq_len: int) -> float:
    from tuneforge.data.tokenize import encode
    from tuneforge.train.loss import evaluate
    from tuneforge.train.packing import pad

    enc = [encode(s, tokenizer, max_seq_len=max_seq_len) for s in samples]
    return evaluate(model, [pad(enc[i:i + 16], tokenizer.pad_token_id) for i in range(0, len(enc), 16)])


def _check_samples(run) -> list:
    from tuneforge.data.load import load_samples

    src = run.config.get("val_data") or run.config.get("data")
    if not src or not Path(src).is_file():
        return []
    return load_samples(src)[:CHECK_EXAMPLES]


def parity_check(run, merged, tokenizer) -> dict:
    """Val loss as trained vs merged. For QLoRA the merged weights are the fp32 base, more accurate than
    the 4-bit base the adapter trained on, so the merged loss is usually lower (-26% after 3 steps on SmolLM2 in
    the slow e2e test); a higher merged loss means the merge is not faithful to what was trained."""
    from peft import PeftModel

    from tuneforge import methods
    from tuneforge.config import TrainConfig
    from tuneforge.models.load import load_base

    samples = _check_samples(run)
    if not samples:
        return {"skipped": "training data not found"}
    cfg = TrainConfig(**{k: v for k, v in run.config.items() if k in TrainConfig.model_fields})
    m = methods.get(run.info["method"])
    base = m.load(cfg, "cpu") if m.load else load_base(run.info["base"], device="cpu")
    trained = PeftModel.from_pretrained(base.model, str(run.adapter))
    as_trained = _val_loss(trained, tokenizer, samples, cfg.max_seq_len)
    del trained
    merged_loss = _val_loss(merged, tokenizer, samples, cfg.max_seq_len)
    return {"examples": len(samples), "val_loss_as_trained": as_trained, "val_loss_merged": merged_loss,
            "relative_change": (merged_loss - as_trained) / max(as_trained, 1e-9)}


def require_mergeable(run) -> None:
    from tuneforge import methods

    if run.adapter is None and run.model is None:
        raise TuneforgeError(f"{run.path}: run has neither adapter/ nor model/ (did training finish?)")
    if run.adapter is not None and not methods.get(run.info["method"]).mergeable:
        raise TuneforgeError(f"{run.path}: {run.info['method']} adapters cannot be merged into model weights, so "
                             "transformers pipeline(), vLLM, ONNX and GGUF cannot load them; use "
                             "peft.PeftModel.from_pretrained(base, RUN/adapter) or `tuneforge generate RUN`")


def trained_model(run):
    """The model as trained, in fp32 on the CPU: base + adapter (peft, not merged) or a full run's model/.

    The reference every export is verified against. A QLoRA adapter is put on the fp32 base (what merge and
    every export start from); its own 4-bit base is compared with the merge by `parity_check`."""
    import torch
    from peft import PeftModel

    from tuneforge.models.load import load_base

    require_mergeable(run)
    if run.adapter is None:
        b = load_base(str(run.model), device="cpu", dtype=torch.float32)
        return b.model.eval(), b.tokenizer
    base = load_base(run.info["base"], device="cpu", dtype=torch.float32)
    return PeftModel.from_pretrained(base.model, str(run.adapter)).eval(), base.tokenizer


def merged_model(run):
    """(merged fp32 model, tokenizer) in memory: what every export format is written from. A full run's
    model/ (or a merged model/ already written) is loaded as it is."""
    import torch
    from peft import PeftModel

    from tuneforge.models.load import load_base, set_default_decoding

    require_mergeable(run)
    if run.model is not None:
        b = load_base(str(run.model), device="cpu", dtype=torch.float32)
        return b.model.eval(), b.tokenizer
    base = load_base(run.info["base"], device="cpu", dtype=torch.float32)  # a QLoRA adapter merges onto fp32
    merged = PeftModel.from_pretrained(base.model, str(run.adapter)).merge_and_unload()
    set_default_decoding(merged, base.tokenizer, max_new_tokens=run.max_new_tokens)
    return merged.eval(), base.tokenizer


def merge(run_dir: str | Path, output: str | Path | None = None, *, check: bool | None = None) -> Path:
    """Write the merged model; `check` (default: on for QLoRA) records a parity check in merge_check.json."""
    from tuneforge import methods

    run = read_run(run_dir)
    out = Path(output) if output else run.path / "model"
    if run.adapter is None:
        if run.model is not None:
            print(f"tuneforge: {run.path} is a full fine-tune; its model/ is already a merged model",
                  file=sys.stderr)
            return run.model
        raise TuneforgeError(f"{run.path}: run has no adapter/ to merge")
    require_mergeable(run)
    merged, tokenizer = merged_model(run)
    if check is None:
        check = methods.get(run.info["method"]).quantized_base  # a 4-bit base: merged weights differ a little
    report = parity_check(run, merged, tokenizer) if check else None

    def write(d: Path) -> None:
        merged.save_pretrained(d)
        tokenizer.save_pretrained(d)  # carries the chat template the model was trained with
        if report is not None:
            (d / "merge_check.json").write_text(json.dumps(report, indent=1))
        manifest.write(d, manifest.build(d, "merged", run.path, {"dtype": "float32"}))

    write_atomic_dir(out, write)
    if report and "relative_change" in report:
        print(f"tuneforge: merge check on {report['examples']} examples: val loss as trained "
              f"{report['val_loss_as_trained']:.4f}, merged {report['val_loss_merged']:.4f} "
              f"({100 * report['relative_change']:+.1f}%)", file=sys.stderr)
        if report["relative_change"] > 0.05:
            print("tuneforge: warning: the merged model is worse than the model as trained; serve the adapter "
                  "on its quantized base instead, or check the base model matches the run's", file=sys.stderr)
    return out
