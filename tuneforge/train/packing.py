"""Micro-batches: padding-free packing (one row, positions restart per example) or padded rows.

Packing keeps attention inside each example: transformers builds a block-diagonal causal mask from
position_ids that restart at 0 when attention_mask is None and there is no KV cache (use_cache=False),
so no FLOP is spent on padding.
"""

from __future__ import annotations

import contextlib

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


# --- attention for packed rows -----------------------------------------------------------------------
# With attention_mask=None transformers builds a T x T block-diagonal mask for a packed row and SDPA then
# computes all T² pairs. Running one causal SDPA call per example does only Σ nᵢ²/2 of that work, with
# identical results (tests/train/test_packing.py); bench/train_speed.py measures the whole loop.
# Anything that is not a packed training row (padding masks, KV-cache decoding, batch > 1) falls back to
# plain SDPA, so generation with a model in this mode is unchanged.
PACKED_SDPA = "tuneforge_packed_sdpa"


def _packed_mask(*args, attention_mask=None, q_length=None, kv_length=None, **kw):
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length:
        return None  # the attention function below splits packed rows itself
    return sdpa_mask(*args, attention_mask=attention_mask, q_length=q_length, kv_length=kv_length, **kw)


def _packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, position_ids=None,
                      **kw):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (attention_mask is not None or position_ids is None or query.shape[0] != 1
            or query.shape[2] != key.shape[2]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kw)
    pos = position_ids[0]
    starts = (pos == 0).nonzero().flatten().tolist() + [pos.numel()]
    if starts[0] != 0:
        starts = [0] + starts
    out = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=True,
        dropout_p=dropout if module.training else 0.0) for a, b in zip(starts, starts[1:])]
    return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None


def use_packed_attention(model) -> bool:
    """Switch a (sdpa) model to per-example attention for packed rows; False if the model cannot."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(PACKED_SDPA, _packed_attention)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_mask)
    try:
        model.set_attn_implementation(PACKED_SDPA)
    except (ValueError, AttributeError):
        return False
    return True


def restore_attention(model) -> None:
    """Back to plain SDPA before saving, so saved configs never name our private kernel."""
    if getattr(model.config, "_attn_implementation", None) == PACKED_SDPA:
        model.set_attn_implementation("sdpa")


@contextlib.contextmanager
def packed_attention(model, enabled: bool = True):
    """Per-example attention for packed rows during a block (training), plain SDPA again after it."""
    if enabled:
        use_packed_attention(model)
    try:
        yield model
    finally:
        restore_attention(model)
