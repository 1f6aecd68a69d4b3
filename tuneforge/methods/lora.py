"""LoRA through peft's LoraConfig with the guide's fields (r, lora_alpha, target_modules, lora_dropout, bias),
plus DoRA, rsLoRA and modules_to_save. Every `target_modules` entry must match: peft is silent when
only some do.
"""

from __future__ import annotations

from tuneforge.errors import ConfigError


def check_targets(model, targets: list[str], field: str = "target_modules") -> None:
    if targets in (["all-linear"], "all-linear"):
        return
    names = [n for n, _ in model.named_modules()]
    leaf = {n.rsplit(".", 1)[-1] for n in names}
    missing = [t for t in targets if t not in leaf and not any(n.endswith("." + t) or n == t for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if "Linear" in type(m).__name__ and "lm_head" not in n})
        raise ConfigError(f"{field}: {', '.join(missing)} not found in the model "
                          f"(its linear layers: {', '.join(linear)})")


def lora_config(cfg):
    from peft import LoraConfig

    target = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=target,
                      lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias, task_type="CAUSAL_LM",
                      use_dora=cfg.use_dora, use_rslora=cfg.use_rslora,
                      modules_to_save=list(cfg.modules_to_save) or None)


def prepare(model, cfg):
    from peft import get_peft_model

    check_targets(model, cfg.target_modules)
    check_targets(model, cfg.modules_to_save, "modules_to_save")
    return get_peft_model(model, lora_config(cfg))
