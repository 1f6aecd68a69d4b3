"""Metrics as pure functions on lists of strings: exact match, BLEU, chrF, ROUGE, classification, bootstrap CIs.

Library code only (no model): `metrics_for("generation", preds, refs)` is what `tuneforge eval` reports.
"""

from __future__ import annotations

import math
import random
import re
from typing import Callable

OTHER = "<other>"


def _check(preds: list, refs: list) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not refs:
        raise ValueError("no examples to score")


def normalize(s: str) -> str:
    """Case-fold, collapse whitespace, unify quotes, drop one trailing ';' or '.' and spaces around , ( )."""
    s = s.strip().replace("\u2018", "'").replace("\u2019", "'").replace('"', "'").lower()
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s*([,()])\s*", r"\1", s)
    return re.sub(r"[;.]\s*$", "", s).strip()


def exact_match_each(preds: list[str], refs: list[str], normalized: bool = True) -> list[int]:
    _check(preds, refs)
    f = normalize if normalized else (lambda x: x.strip())
    return [int(f(p) == f(r)) for p, r in zip(preds, refs)]


def exact_match(preds: list[str], refs: list[str], normalized: bool = True) -> float:
    each = exact_match_each(preds, refs, normalized)
    return sum(each) / len(each)


def bleu(preds: list[str], refs: list[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100)."""
    import sacrebleu

    _check(preds, refs)
    return float(sacrebleu.corpus_bleu(preds, [refs]).score)


def bleu_each(preds: list[str], refs: list[str]) -> list[float]:
    import sacrebleu

    _check(preds, refs)
    return [float(sacrebleu.sentence_bleu(p, [r]).score) for p, r in zip(preds, refs)]


def chrf(preds: list[str], refs: list[str]) -> float:
    import sacrebleu

    _check(preds, refs)
    return float(sacrebleu.corpus_chrf(preds, [refs]).score)


def rouge_each(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    _check(preds, refs)
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for p, r in zip(preds, refs):
        s = sc.score(r, p)
        for k in out:
            out[k].append(s[k].fmeasure)
    return out


def rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in rouge_each(preds, refs).items()}


def perplexity(nll_sum: float, n_tokens: int) -> float:
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(nll_sum / n_tokens)


def classification_metrics(preds: list[str], refs: list[str], labels: list[str] | None = None) -> dict:
    """Accuracy, macro and per-label P/R/F1, confusion matrix; predictions outside the label set are wrong."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    _check(preds, refs)
    preds, refs = [p.strip() for p in preds], [r.strip() for r in refs]
    if labels is not None:
        unknown = sorted({r for r in refs if r not in labels})
        if unknown:
            raise ValueError(f"reference label(s) {unknown} not in the label set {sorted(labels)}")
    labels = sorted(labels if labels is not None else set(refs))
    mapped = [p if p in labels else OTHER for p in preds]
    cm_labels = labels + ([OTHER] if OTHER in mapped else [])
    p, r, f, s = precision_recall_fscore_support(refs, mapped, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(refs, mapped, labels=labels, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(refs, mapped)), "precision_macro": float(mp),
            "recall_macro": float(mr), "f1_macro": float(mf),
            "per_label": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                "support": int(s[i])} for i, lab in enumerate(labels)},
            "confusion_matrix": {"labels": cm_labels,
                                 "matrix": confusion_matrix(refs, mapped, labels=cm_labels).tolist()}}


def generation_metrics(preds: list[str], refs: list[str]) -> dict[str, float]:
    return {"exact_match": exact_match(preds, refs, normalized=False),
            "exact_match_normalized": exact_match(preds, refs, normalized=True),
            "bleu": bleu(preds, refs), "chrf": chrf(preds, refs), **rouge(preds, refs)}


def metrics_for(task: str, preds: list[str], refs: list[str], labels: list[str] | None = None) -> dict:
    if task == "classification":
        return classification_metrics(preds, refs, labels)
    return generation_metrics(preds, refs)


def bootstrap_ci(each: list[float], *, n: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """Percentile bootstrap CI of a per-example mean."""
    if not each:
        raise ValueError("no examples to bootstrap")
    rng = random.Random(seed)
    k = len(each)
    means = sorted(sum(each[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    lo, hi = means[int((1 - ci) / 2 * n)], means[min(n - 1, int((1 + ci) / 2 * n))]
    return {"mean": sum(each) / k, "low": lo, "high": hi}


def _paired_bootstrap(stat: Callable[[list[int]], float], k: int, n: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile CI of stat(indices) over n resamples of k example indices (same indices for both models)."""
    rng = random.Random(seed)
    vals = sorted(stat([rng.randrange(k) for _ in range(k)]) for _ in range(n))
    return vals[int((1 - ci) / 2 * n)], vals[min(n - 1, int((1 + ci) / 2 * n))]


def bootstrap_delta(a_each: list[float], b_each: list[float], *, n: int = 1000, seed: int = 0,
                    ci: float = 0.95) -> dict:
    """Paired bootstrap CI of mean(b) - mean(a): the same resampled examples score both models."""
    _check(a_each, b_each)
    k = len(a_each)
    lo, hi = _paired_bootstrap(lambda idx: sum(b_each[i] - a_each[i] for i in idx) / k, k, n, seed, ci)
    return {"delta": (sum(b_each) - sum(a_each)) / k, "low": lo, "high": hi}


def bootstrap_corpus_delta(metric: Callable[[list[str], list[str]], float], preds_a: list[str],
                           preds_b: list[str], refs: list[str], *, n: int = 200, seed: int = 0,
                           ci: float = 0.95) -> dict:
    """Paired bootstrap for corpus-level metrics (BLEU, chrF): recomputes the metric 2n times (cost!)."""
    _check(preds_a, refs)

    def stat(idx: list[int]) -> float:
        sub = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return metric(sub(preds_b), sub(refs)) - metric(sub(preds_a), sub(refs))

    lo, hi = _paired_bootstrap(stat, len(refs), n, seed, ci)
    return {"delta": metric(preds_b, refs) - metric(preds_a, refs), "low": lo, "high": hi}
