"""LoRA through peft's LoraConfig with the guide's fields (r, lora_alpha, target_modules, lora_dropout, bias).

Every `target_modules` entry must match a module: peft is silent when only some match.
"""

from __future__ import annotations

from tuneforge.errors import ConfigError


def check_targets(model, targets: list[str]) -> None:
    if targets in (["all-linear"], "all-linear"):
        return
    names = [n for n, _ in model.named_modules()]
    leaf = {n.rsplit(".", 1)[-1] for n in names}
    missing = [t for t in targets if t not in leaf and not any(n.endswith("." + t) or n == t for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if type(m).__name__ == "Linear" and "lm_head" not in n})
        raise ConfigError(f"target_modules: {', '.join(missing)} not found in the model "
                          f"(its linear layers: {', '.join(linear)})")


def lora_config(cfg):
    from peft import LoraConfig

    target = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=target,
                      lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias, task_type="CAUSAL_LM")


def prepare(model, cfg):
    from peft import get_peft_model

    check_targets(model, cfg.target_modules)
    return get_peft_model(model, lora_config(cfg))
