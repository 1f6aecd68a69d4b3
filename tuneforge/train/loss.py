"""The one place loss and token counts are computed: CE summed over supervised positions only.

The output layer runs only at supervised positions, in chunks (the vocabulary is ~49k: full logits
would dominate memory and time); the caller divides the sum by the optimizer step's supervised
token count, so gradient accumulation equals one larger batch exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneforge.data.tokenize import IGNORE

CHUNK = 1024  # supervised positions per output-layer chunk


def _chunk_ce(h: torch.Tensor, weight: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ weight.t()).float(), tgt, reduction="sum")


def fast_path_ok(model) -> bool:
    """Whether the output layer can run at supervised positions only: not for prompt-learning peft models
    (their virtual tokens exist only in peft's forward; `methods` marks them `generic_loss`) nor for models that
    scale or soft-cap logits, nor under FSDP (the root module's forward must run)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):  # FSDP2 gathers weights in the root's forward: call the model itself
        return False
    cfg = getattr(model, "config", None)
    prompt_learning = getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)
    return (hasattr(model, "get_decoder") and not prompt_learning
            and not getattr(cfg, "final_logit_softcapping", None) and not getattr(cfg, "logit_scale", None))


def input_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) input tokens of a micro-batch."""
    return int(batch["input_ids"].numel() if batch["attention_mask"] is None else batch["attention_mask"].sum())


def loss_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """(sum of CE over supervised tokens, n supervised tokens, n input tokens) for one micro-batch."""
    device = next(model.parameters()).device
    tgt = batch["targets"].to(device)
    sup = tgt.reshape(-1) != IGNORE
    n_sup = int(sup.sum())
    n_tok = input_tokens(batch)
    kw = dict(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
              attention_mask=None if batch["attention_mask"] is None else batch["attention_mask"].to(device),
              use_cache=False)
    if not fast_path_ok(model):  # e.g. prompt tuning, soft-capped logits: full logits, standard CE
        logits = model(**kw).logits[:, -tgt.shape[1]:]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                               ignore_index=IGNORE, reduction="sum"), n_sup, n_tok
    hidden = model.get_decoder()(**kw).last_hidden_state
    h = hidden.reshape(-1, hidden.shape[-1])[sup]
    t = tgt.reshape(-1)[sup]
    weight = model.get_output_embeddings().weight
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], CHUNK):
        hc, tc = h[i:i + CHUNK], t[i:i + CHUNK]
        if h.shape[0] > CHUNK and torch.is_grad_enabled():  # recompute logits in backward: bounded memory
            total = total + checkpoint(_chunk_ce, hc, weight, tc, use_reentrant=False)
        else:
            total = total + _chunk_ce(hc, weight, tc)
    return total, n_sup, n_tok


@torch.no_grad()
def evaluate(model, batches: list[dict[str, torch.Tensor]], forward=None) -> float:
    """Token-weighted mean CE over a validation set. `forward(batch)` → loss_sum's triple, when the model is
    wrapped for several processes (DDP/FSDP need their own forward); default loss_sum(model, batch)."""
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    for b in batches:
        s, k, _ = forward(b) if forward is not None else loss_sum(model, b)
        tot, n = tot + float(s), n + k
    model.train(was)
    return tot / max(n, 1)
