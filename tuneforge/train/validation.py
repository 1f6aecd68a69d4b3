"""One validation pass that yields the loss and the exact match in the same forward: no generation needed.

Exact match by teacher forcing: an example counts when, at every supervised position, the model's most likely
next token is the reference token, the end-of-turn token included. That is precisely the condition under
which greedy decoding (what `eval` and the server do at temperature 0) reproduces the reference answer token
for token and then stops, so it is `eval`'s exact match measured without decoding (it can only differ when the
model would write the same text with other tokens, or add whitespace `eval` strips). On a classification run it
is the rate at which free greedy generation gives the right label, a close, slightly stricter stand-in for the
constrained accuracy `eval` reports. Cost: the forward the validation loss already needs, plus an argmax over
the supervised positions' logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.data.tokenize import IGNORE
from tuneforge.train.loss import CHUNK, fast_path_ok

METRIC_MAX_ANSWER = 64  # measured only where the median answer is this short (tokens): long answers are rarely
# exact, and choosing the best weights by it would be noise


def _example_ids(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which example each flattened position belongs to (packed rows restart positions at 0 per example)."""
    if batch["attention_mask"] is None:
        return torch.cumsum((batch["position_ids"].reshape(-1) == 0).long(), 0) - 1
    rows, width = batch["input_ids"].shape
    return torch.arange(rows).repeat_interleave(width)


@torch.no_grad()
def _scores(model, batch: dict[str, torch.Tensor]) -> tuple[float, int, torch.Tensor]:
    """(CE sum over supervised tokens, their count, per-example 1/0 exact match) for one batch."""
    device = next(model.parameters()).device
    tgt = batch["targets"].to(device)
    sup = tgt.reshape(-1) != IGNORE
    kw = dict(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
              attention_mask=None if batch["attention_mask"] is None else batch["attention_mask"].to(device),
              use_cache=False)
    t = tgt.reshape(-1)[sup]
    if fast_path_ok(model):  # the output layer on supervised positions only, in chunks (as loss_sum)
        hidden = model.get_decoder()(**kw).last_hidden_state
        h = hidden.reshape(-1, hidden.shape[-1])[sup]
        weight = model.get_output_embeddings().weight
        parts = [(h[i:i + CHUNK] @ weight.t()).float() for i in range(0, h.shape[0], CHUNK)]
        logits = torch.cat(parts) if parts else h.new_zeros((0, weight.shape[0]))
    else:
        full = model(**kw).logits[:, -tgt.shape[1]:]
        logits = full.reshape(-1, full.shape[-1])[sup].float()
    ce = float(F.cross_entropy(logits, t, reduction="sum")) if len(t) else 0.0
    wrong = (logits.argmax(-1) != t).float()
    ex = _example_ids(batch).to(device)[sup]
    n_ex = int(ex.max()) + 1 if len(ex) else 0
    misses = torch.zeros(n_ex, device=device).index_add_(0, ex, wrong)
    counted = torch.zeros(n_ex, device=device).index_add_(0, ex, torch.ones_like(wrong)) > 0
    return ce, int(sup.sum()), (misses[counted] == 0).float().cpu()


@torch.no_grad()
def validate_batches(model, batches: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """(token-weighted mean validation loss, exact match in [0, 1]) over the validation batches."""
    was = model.training
    model.eval()
    try:
        tot, n, hits = 0.0, 0, []
        for b in batches:
            s, k, em = _scores(model, b)
            tot, n = tot + s, n + k
            hits.append(em)
    finally:
        model.train(was)
    em = torch.cat(hits) if hits else torch.zeros(0)
    return tot / max(n, 1), float(em.mean()) if len(em) else 0.0
