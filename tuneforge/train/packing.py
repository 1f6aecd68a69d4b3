"""Micro-batches: padding-free packing (one row, positions restart per example) or padded rows.

Packing keeps attention inside each example: transformers builds a block-diagonal causal mask from
position_ids that restart at 0 when attention_mask is None and there is no KV cache (use_cache=False),
so no FLOP is spent on padding.
"""

from __future__ import annotations

import torch

from tuneforge.data.tokenize import IGNORE, Encoded


def _targets(labels: list[int]) -> list[int]:
    # position j predicts token j+1 of the SAME example; the last position predicts nothing
    return labels[1:] + [IGNORE]


def pack(batch: list[Encoded]) -> dict[str, torch.Tensor]:
    ids, pos, tgt = [], [], []
    for e in batch:
        ids += e.input_ids
        pos += range(len(e.input_ids))
        tgt += _targets(e.labels)
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]),
            "attention_mask": None, "targets": torch.tensor([tgt])}


def pad(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id)
    tgt = torch.full((len(batch), width), IGNORE)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        tgt[i, :n] = torch.tensor(_targets(e.labels))
        mask[i, :n] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "targets": tgt}


def collate(batch: list[Encoded], *, packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    return pack(batch) if packing else pad(batch, pad_id)
