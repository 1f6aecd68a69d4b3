"""Training methods: one small module each, one line in METHODS. `prepare(model, cfg)` → trainable model."""

from __future__ import annotations

from typing import Callable

from tuneforge.methods import full, lora

# name -> (prepare(model, cfg) -> model, saves an adapter?)
METHODS: dict[str, tuple[Callable, bool]] = {
    "lora": (lora.prepare, True),
    "full": (full.prepare, False),
}


def prepare(model, cfg):
    if cfg.method not in METHODS:
        from tuneforge.errors import ConfigError
        raise ConfigError(f"method '{cfg.method}' is not available (have: {', '.join(METHODS)})")
    return METHODS[cfg.method][0](model, cfg)


def saves_adapter(method: str) -> bool:
    return METHODS[method][1]


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
