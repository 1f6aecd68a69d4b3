"""Full fine-tuning: every weight trains. Best on large data; most memory; risks catastrophic forgetting."""

from __future__ import annotations


def prepare(model, cfg):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
