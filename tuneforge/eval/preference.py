"""Held-out preference metrics for `tuneforge eval` on preference data (a DPO run's test pairs), base vs tuned.

Per model (comparable across models, no reference needed):
- `preference_accuracy`: share of pairs where the model gives the preferred answer the higher per-token mean
  log-probability (length-normalised, so a shorter answer does not win by length alone);
- `logp_margin`: mean of (mean log-prob of the preferred answer − that of the other one);
- `greedy_prefers_chosen`: share of the model's greedy answers closer (ROUGE-L) to the preferred answer than to
  the non-preferred one: does what it *says* move toward the preference, not just what it scores.
Tuned relative to the baseline (DPO's implicit reward r = β·(log π − log π_base), with the run's β):
- `reward_accuracy` (r(chosen) > r(rejected)) and `reward_margin` (mean r(chosen) − r(rejected)).
"""

from __future__ import annotations

import torch

from tuneforge.data.formats import Preference


def is_preference_data(samples: list) -> bool:
    return bool(samples) and all(isinstance(s, Preference) for s in samples)


@torch.no_grad()
def pair_logps(loaded, samples: list[Preference], *, max_seq_len: int = 2048, batch_size: int = 8) -> dict:
    """{"pc", "pr", "lc", "lr"}: summed log-probs and token counts of each pair's preferred (c) and other (r)
    answer under `loaded.model`, scored exactly as DPO trains (chat template, answer tokens only)."""
    from tuneforge.data.tokenize import encode_preference
    from tuneforge.train.objectives.dpo import answer_logps, collate_pairs

    tok = loaded.tokenizer
    pairs = [encode_preference(s, tok, max_seq_len=max_seq_len) for s in samples]
    sums, counts = [], []
    for i in range(0, len(pairs), batch_size):
        s, c = answer_logps(loaded.model, collate_pairs(pairs[i:i + batch_size], packing=False,
                                                        pad_id=tok.pad_token_id))
        sums += s.tolist()
        counts += c.tolist()
    return {"pc": sums[0::2], "pr": sums[1::2], "lc": counts[0::2], "lr": counts[1::2]}


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(len(xs), 1)


def per_pair(lp: dict) -> tuple[list[float], list[float]]:
    """(won: 1.0/0.0 per pair, margin per pair) on per-token mean log-probs."""
    margin = [pc / max(lc, 1) - pr / max(lr, 1) for pc, pr, lc, lr in zip(lp["pc"], lp["pr"], lp["lc"], lp["lr"])]
    return [float(m > 0) for m in margin], margin


def greedy_prefers_chosen(preds: list[str], samples: list[Preference]) -> list[float]:
    from tuneforge.eval import metrics as M

    text = lambda turns: "\n".join(m["content"] for m in turns)  # noqa: E731
    to_c = M.rouge_each(preds, [text(s.chosen) for s in samples])["rougeL"]
    to_r = M.rouge_each(preds, [text(s.rejected) for s in samples])["rougeL"]
    return [float(c > r) for c, r in zip(to_c, to_r)]


def model_metrics(lp: dict, preds: list[str], samples: list[Preference]) -> dict:
    won, margin = per_pair(lp)
    return {"preference_accuracy": _mean(won), "logp_margin": _mean(margin),
            "greedy_prefers_chosen": _mean(greedy_prefers_chosen(preds, samples))}


def reward_metrics(tuned: dict, base: dict, beta: float) -> dict:
    """DPO's implicit rewards of the tuned model with the baseline as reference."""
    r = [beta * ((tc - bc) - (tr - br)) for tc, bc, tr, br in zip(tuned["pc"], base["pc"], tuned["pr"], base["pr"])]
    return {"beta": beta, "reward_accuracy": _mean([float(x > 0) for x in r]), "reward_margin": _mean(r)}
