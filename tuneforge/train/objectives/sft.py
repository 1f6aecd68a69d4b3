"""Supervised fine-tuning: cross-entropy on the answer tokens of examples (`Sample`s).

Items are `Encoded` examples (token ids + loss mask); a micro-batch is packed into one row or padded; the loss
is CE summed over supervised positions (`train.loss`), so a step is normalised by its supervised tokens.
"""

from __future__ import annotations

import torch

from tuneforge.data.formats import Preference, Sample, near_key
from tuneforge.data.load import load_samples
from tuneforge.data.split import split_indices
from tuneforge.data.tokenize import IGNORE, Encoded, encode
from tuneforge.errors import DataError
from tuneforge.train.loss import evaluate, input_tokens, loss_sum
from tuneforge.train.objectives import Objective
from tuneforge.train.packing import collate
from tuneforge.train.validation import METRIC_MAX_ANSWER, validate_batches

VAL_BATCH_SIZE = 16  # validation examples per forward pass (no gradients: memory is activations only)


def holdout(samples: list[Sample], frac: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded validation hold-out; near-duplicates stay on one side (no leakage), stratified by label."""
    if frac <= 0 or len(samples) < 2:
        return samples, []
    labels = [s.label for s in samples]
    idx = split_indices([near_key(s) for s in samples], test=0.0, val=frac, seed=seed,
                        stratify=labels if all(x is not None for x in labels) else None)
    return [samples[i] for i in idx["train"]], [samples[i] for i in idx["val"]]


def label_set(samples: list[Sample]) -> list[str] | None:
    """Classification data (every example has a label): its sorted label set, else None."""
    if not samples or any(s.label is None for s in samples):
        return None
    return sorted({s.label for s in samples})


def supervised_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["targets"] != IGNORE).sum())


class SFT(Objective):
    name = "sft"
    count_key = "supervised_tokens"
    val_metric = "val_exact_match"  # teacher-forced greedy exact match (train/validation.py), short answers only

    def load(self, path: str) -> list[Sample]:
        return load_samples(path)

    def holdout(self, rows, frac, seed):
        return holdout(rows, frac, seed)

    def notes(self, rows: list[Sample]) -> list[str]:
        n = sum(isinstance(s, Preference) for s in rows)
        return [f"{n} preference rows: supervised fine-tuning learns their preferred answers only (the other "
                "answer is not used); --objective dpo learns from both"] if n else []

    def encode(self, rows: list[Sample], tokenizer, what: str) -> tuple[list[Encoded], int]:
        cfg = self.cfg
        out, truncated = [], 0
        for s in rows:
            e = encode(s, tokenizer, max_seq_len=cfg.max_seq_len, train_on_prompt=cfg.train_on_prompt)
            truncated += e.truncated
            if e.n_supervised:
                out.append(e)
        if not out:
            raise DataError(f"no {what} example has a supervised token left after truncation to "
                            f"max_seq_len={cfg.max_seq_len}", path=rows[0].where.rsplit(":", 1)[0] if rows else "",
                            field="max_seq_len", code="empty")
        return out, truncated

    def data_info(self, items: list[Encoded]) -> dict:
        return {"train_tokens": sum(len(e.input_ids) for e in items),
                "train_supervised_tokens": sum(e.n_supervised for e in items),
                "max_answer_tokens": max(e.n_supervised for e in items)}

    def labels(self, rows):
        return label_set(rows)

    def batch(self, p, items: list[Encoded], model) -> dict[str, torch.Tensor]:
        return collate(items, packing=p.cfg.packing, pad_id=p.base.tokenizer.pad_token_id)

    def count(self, batch) -> int:
        return supervised_tokens(batch)

    def tokens(self, batch) -> int:
        return input_tokens(batch)

    def loss(self, model, batch):
        s, _, _ = loss_sum(model, batch)
        return s, {}

    def val_batches(self, p) -> list:
        from tuneforge.train.distributed import launched_world_size

        answers = sorted(e.n_supervised for e in p.val)
        # exact match where it means something (short answers) and the model is whole on this process
        self._exact = bool(answers) and answers[len(answers) // 2] <= METRIC_MAX_ANSWER and launched_world_size() == 1
        return [collate(p.val[i:i + VAL_BATCH_SIZE], packing=p.cfg.packing, pad_id=p.base.tokenizer.pad_token_id)
                for i in range(0, len(p.val), VAL_BATCH_SIZE)]

    def validate(self, model, forward, batches) -> dict[str, float]:
        if getattr(self, "_exact", False):  # loss and exact match from the same forward
            loss, em = validate_batches(model, batches)
            return {"val_loss": loss, "val_exact_match": em}
        # token-weighted mean CE; `evaluate` takes (sum, n supervised, n tokens) per batch
        return {"val_loss": evaluate(model, batches, forward=lambda b: (forward(b)[0], supervised_tokens(b), 0))}
