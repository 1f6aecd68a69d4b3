"""Continue training from a finished run: `tuneforge train --from-run RUN --data new.jsonl --output RUN2`.

The new run starts from RUN's trained weights instead of a fresh adapter: for LoRA, QLoRA and prompt tuning
RUN's adapter is loaded into the new run's freshly prepared model before the first step (peft's
`set_peft_model_state_dict`); for a full fine-tune RUN/model is the new run's base. So the first training loss
is where RUN's training ended, not where the base model starts. Base, method and adapter shape (rank, alpha,
target modules, ...) are taken from RUN: a different value for any of them on the command line is an error,
since the weights would not fit. Everything else (data, learning rate, epochs, ...) is the new run's own.

The parent is recorded in the new run's config.yaml (`from_run`) and run.json (`parent`: path, id, method,
steps, sha256 of the weights it started from); `tuneforge runs show RUN2` names it and the lineage above it.
Typical loop: `tuneforge monitor export-feedback --output new.jsonl`, then train --from-run on it.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge import methods
from tuneforge.errors import ConfigError, ModelError
from tuneforge.run import file_sha256, is_run, read_run

# what must match the parent for its weights to load (and what a continued run means by "the same model")
INHERITED = ("base", "method", "lora_r", "lora_alpha", "target_modules", "lora_bias", "use_dora", "use_rslora",
             "modules_to_save", "num_virtual_tokens", "quant_backend", "bnb_4bit_quant_type",
             "bnb_4bit_use_double_quant")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _parent(from_run: str):
    if not is_run(from_run):
        raise ConfigError(f"--from {from_run}: not a finished run directory (no run.json)")
    return read_run(from_run)


def inherit(cfg) -> None:
    """Take base, method and adapter shape from the parent run (cfg.from_run); conflicting explicit values
    are an error. For a full fine-tune the parent's model/ becomes the base."""
    parent = _parent(cfg.from_run)
    pcfg = parent.config
    method = pcfg.get("method") or parent.info.get("method")
    for key in INHERITED:
        if key not in pcfg:
            continue
        want = pcfg[key]
        if key == "base" and not methods.get(method).adapter:
            if parent.model is None:
                raise ConfigError(f"--from {cfg.from_run}: a full fine-tune without model/ to continue from")
            want = str(parent.model)
        if key in cfg.model_fields_set and getattr(cfg, key) != want:
            raise ConfigError(f"--{key} {getattr(cfg, key)!r}: --from {cfg.from_run} continues its {key} "
                              f"({want!r}); leave --{key} out")
        setattr(cfg, key, want)
    if methods.get(method).adapter and parent.adapter is None:
        raise ConfigError(f"--from {cfg.from_run}: the run has no adapter/ to continue from")


def load_parent(model, cfg) -> None:
    """Load the parent's adapter weights into the prepared peft model (nothing to do for a full fine-tune,
    whose base already is the parent's weights)."""
    if not methods.get(cfg.method).adapter:
        return
    from peft import set_peft_model_state_dict

    parent = _parent(cfg.from_run)
    path = next((parent.adapter / f for f in ADAPTER_FILES if (parent.adapter / f).is_file()), None)
    if path is None:
        raise ModelError(f"--from {cfg.from_run}: {parent.adapter} holds no adapter weights")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        res = set_peft_model_state_dict(model, state)
    except RuntimeError as e:  # shapes differ: not the same base or adapter shape
        raise ModelError(f"--from {cfg.from_run}: its adapter does not fit this model: "
                         f"{str(e).splitlines()[0]}") from None
    unexpected = list(getattr(res, "unexpected_keys", []) or [])
    if unexpected:
        raise ModelError(f"--from {cfg.from_run}: {len(unexpected)} adapter weight(s) have no place in this model "
                         f"(e.g. {unexpected[0]})")


def parent_info(from_run: str) -> dict:
    """What run.json records about the parent."""
    parent = _parent(from_run)
    weights = None
    if parent.adapter is not None:
        weights = next((parent.adapter / f for f in ADAPTER_FILES if (parent.adapter / f).is_file()), None)
    elif parent.model is not None:
        weights = next(iter(sorted(Path(parent.model).glob("*.safetensors"))), None)
    return {"path": str(Path(from_run).resolve()), "id": Path(from_run).resolve().name,
            "method": parent.info.get("method"), "steps": parent.info.get("steps"),
            "git_commit": parent.info.get("git_commit"),
            "weights_sha256": file_sha256(weights) if weights is not None else None}
