"""Metrics as pure functions on lists of strings: exact match, BLEU, chrF, ROUGE, classification, bootstrap CIs.

No model code: `metrics_for(task, preds, refs)` is what `tuneforge eval` reports; `bootstrap_*` give paired CIs.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np

OTHER = "<other>"  # confusion-matrix column for predictions outside the label set
TASKS = ("classification", "generation")

# Typographic single and double quotes (and the ASCII double quote) all become "'".
_QUOTES = str.maketrans({c: "'" for c in '"\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f'})


def _check(preds: Sequence, refs: Sequence, what: tuple[str, str] = ("predictions", "references")) -> None:
    """Paired inputs must be non-empty and of equal length; silent truncation by zip hides bugs."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} {what[0]} but {len(refs)} {what[1]}: they must pair up one to one")
    if not refs:
        raise ValueError(f"no examples to score: {what[0]} and {what[1]} are empty")


def _check_text(preds: Sequence, refs: Sequence) -> None:
    _check(preds, refs)
    for name, xs in (("prediction", preds), ("reference", refs)):
        bad = next((i for i, x in enumerate(xs) if not isinstance(x, str)), None)
        if bad is not None:
            raise TypeError(f"{name} {bad} is {type(xs[bad]).__name__}, not str")


def normalize_answer(s: str) -> str:
    """The comparison form for normalised exact match; cosmetic differences a human would not count as errors.

    In order: map the quotes " ‘ ’ ‚ ‛ “ ” „ ‟ to ', lowercase, collapse every run of whitespace to one
    space, remove spaces around ',', '(' and ')' (so `COUNT( * )` = `count(*)`, `a , b` = `a,b`), then strip
    surrounding whitespace and the trailing run of ';' and '.' (`x;` = `x.` = `x ;.` = `x`). Idempotent by design.
    Case and quoting inside string literals are ignored too: use strict exact match when they matter.
    """
    s = s.translate(_QUOTES).lower()
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s*([,()])\s*", r"\1", s)
    return re.sub(r"[\s;.]+$", "", s).strip()


def exact_match_each(preds: list[str], refs: list[str], normalized: bool) -> list[int]:
    """1/0 per example. Strict only strips surrounding whitespace (generations end in stray newlines)."""
    _check_text(preds, refs)
    f = normalize_answer if normalized else str.strip
    return [int(f(p) == f(r)) for p, r in zip(preds, refs)]


def exact_match(preds: list[str], refs: list[str], normalized: bool) -> float:
    """Fraction in [0, 1] of examples that match (see `exact_match_each`)."""
    each = exact_match_each(preds, refs, normalized)
    return sum(each) / len(each)


def bleu(preds: list[str], refs: list[str]) -> float:
    """Corpus BLEU, 0-100 (sacrebleu defaults: 13a tokenisation, one reference per example).

    Corpus BLEU is not the mean of sentence BLEU: bootstrap it with `bootstrap_corpus_delta`.
    """
    import sacrebleu

    _check_text(preds, refs)
    return float(sacrebleu.corpus_bleu(preds, [refs]).score)


def bleu_each(preds: list[str], refs: list[str]) -> list[float]:
    """Sentence BLEU per example (sacrebleu.sentence_bleu: exp smoothing, effective order), 0-100."""
    import sacrebleu

    _check_text(preds, refs)
    return [float(sacrebleu.sentence_bleu(p, [r]).score) for p, r in zip(preds, refs)]


def chrf(preds: list[str], refs: list[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta=2), 0-100."""
    import sacrebleu

    _check_text(preds, refs)
    return float(sacrebleu.corpus_chrf(preds, [refs]).score)


def chrf_each(preds: list[str], refs: list[str]) -> list[float]:
    """Sentence chrF per example, 0-100."""
    import sacrebleu

    _check_text(preds, refs)
    return [float(sacrebleu.sentence_chrf(p, [r]).score) for p, r in zip(preds, refs)]


def rouge_each(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F-measure in [0, 1] (rouge_score, Porter stemmer).

    rouge_score's tokenizer keeps only [a-z0-9] tokens, so non-Latin text scores 0: prefer chrF there.
    """
    from rouge_score import rouge_scorer

    _check_text(preds, refs)
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for p, r in zip(preds, refs):
        s = sc.score(r, p)  # score(target, prediction)
        for k in out:
            out[k].append(float(s[k].fmeasure))
    return out


def rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    """Mean per-example ROUGE-1/2/L F-measure in [0, 1]."""
    return {k: sum(v) / len(v) for k, v in rouge_each(preds, refs).items()}


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(nll_sum / n_tokens): the sum of token negative log-likelihoods (nats) over scored tokens.

    Returns inf rather than raising when the mean NLL is too large for a float (a diverged model).
    """
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one scored token, got n_tokens={n_tokens}")
    if math.isnan(nll_sum) or nll_sum < 0:
        raise ValueError(f"nll_sum must be a non-negative negative log-likelihood, got {nll_sum}")
    try:
        return math.exp(nll_sum / n_tokens)
    except OverflowError:
        return math.inf


def classification_metrics(preds: list[str], refs: list[str], labels: list[str] | None = None) -> dict:
    """Accuracy, macro and per-label precision/recall/F1/support, and the confusion matrix (scikit-learn).

    Labels are compared after stripping surrounding whitespace, case-sensitively. `labels` fixes the label
    set and its order (default: the sorted distinct references); a reference outside it is a ValueError.
    A prediction outside it is wrong and lands in an extra "<other>" column. Macro averages run over the
    label set only, so a given label with no references scores 0 recall (scikit-learn zero_division=0).
    `confusion_matrix` is {"labels": order, "matrix": rows = reference, columns = prediction}; when
    "<other>" is present it is appended to the order and its row is all zeros (the matrix stays square).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    _check_text(preds, refs)
    preds, refs = [p.strip() for p in preds], [r.strip() for r in refs]
    if labels is None:
        order = sorted(set(refs))
    else:
        order = list(dict.fromkeys(lab.strip() for lab in labels))  # keep the caller's order, drop repeats
        if not order:
            raise ValueError("labels is empty: pass None to use the distinct references")
        if OTHER in order:
            raise ValueError(f"{OTHER!r} is reserved for predictions outside the label set")
        unknown = sorted(set(refs) - set(order))
        if unknown:
            raise ValueError(f"reference label(s) {unknown} not in the label set {order}")
    mapped = [p if p in order else OTHER for p in preds]
    cm_labels = order + ([OTHER] if OTHER in mapped else [])
    p, r, f, s = precision_recall_fscore_support(refs, mapped, labels=order, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(refs, mapped, labels=order, average="macro", zero_division=0)
    with warnings.catch_warnings():  # sklearn warns on any 1x1 matrix, even with labels= given, as here
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        cm = confusion_matrix(refs, mapped, labels=cm_labels).tolist()
    return {
        "accuracy": float(accuracy_score(refs, mapped)),
        "precision_macro": float(mp), "recall_macro": float(mr), "f1_macro": float(mf),
        "per_label": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(s[i])} for i, lab in enumerate(order)},
        "confusion_matrix": {"labels": cm_labels,
                             "matrix": cm},
    }


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE: how far stated confidence is from accuracy, averaged over equal-width confidence bins.

    Sum over bins of (share of examples in the bin) x |accuracy in the bin - mean confidence in the bin|; bins
    are (0, 0.1], (0.1, 0.2], ... (a confidence of exactly 0 joins the first). 0 = calibrated; a model that says
    0.9 and is right half the time scores 0.4. With constrained prediction the confidence is the predicted
    label's probability."""
    _check(list(confidences), list(correct), ("confidences", "correctness flags"))
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = np.asarray(confidences, dtype=float)
    if (conf.min() < 0 or conf.max() > 1 or not np.isfinite(conf).all()):
        raise ValueError("confidences must lie in [0, 1]")
    ok = np.asarray(correct, dtype=float)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(ok[sel].mean() - conf[sel].mean())
    return float(ece)


def generation_metrics(preds: list[str], refs: list[str]) -> dict[str, float]:
    """Exact match (strict and normalised, [0, 1]), BLEU and chrF (0-100), ROUGE-1/2/L ([0, 1])."""
    return {"exact_match": exact_match(preds, refs, normalized=False),
            "exact_match_normalized": exact_match(preds, refs, normalized=True),
            "bleu": bleu(preds, refs), "chrf": chrf(preds, refs), **rouge(preds, refs)}


def metrics_for(task: str, preds: list[str], refs: list[str], labels: list[str] | None = None) -> dict:
    """The metric bundle for a task: "classification" or "generation" (labels apply to classification)."""
    if task == "classification":
        return classification_metrics(preds, refs, labels)
    if task == "generation":
        return generation_metrics(preds, refs)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# ---- bootstrap ---------------------------------------------------------------------------------------------

def _check_bootstrap(n: int, ci: float) -> None:
    if n < 1:
        raise ValueError(f"n (bootstrap resamples) must be >= 1, got {n}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _as_scores(each: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(each, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a flat list of per-example scores")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {x[bad[0]]}: per-example scores must be finite")
    return x


def _resamples(k: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """n resamples of k example indices, with replacement. One seed gives the same resamples to every
    bootstrap_* function, so per-example and corpus-level deltas of one eval are computed on the same draws."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.integers(0, k, size=k)


def _interval(stats: list[float], ci: float) -> tuple[float, float]:
    """Percentile interval (linear interpolation between order statistics)."""
    lo, hi = np.quantile(np.asarray(stats), [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def bootstrap_ci(each: list[float], *, n: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """Percentile bootstrap CI of a per-example mean: {"mean", "low", "high"}. Cost: n means of len(each)."""
    _check_bootstrap(n, ci)
    x = _as_scores(each, "each")
    if not x.size:
        raise ValueError("no examples to bootstrap: each is empty")
    lo, hi = _interval([float(x[idx].mean()) for idx in _resamples(x.size, n, seed)], ci)
    return {"mean": float(x.mean()), "low": lo, "high": hi}


def bootstrap_delta(a_each: list[float], b_each: list[float], *, n: int = 1000, seed: int = 0,
                    ci: float = 0.95) -> dict:
    """Paired bootstrap CI of mean(b) - mean(a): {"delta", "low", "high"}.

    Each resample draws example indices once and scores both systems on them, so the shared difficulty of
    an example cancels: far tighter than two independent CIs. A CI excluding 0 means b differs from a.
    """
    _check(a_each, b_each, ("scores for a", "scores for b"))
    _check_bootstrap(n, ci)
    d = _as_scores(b_each, "b_each") - _as_scores(a_each, "a_each")
    lo, hi = _interval([float(d[idx].mean()) for idx in _resamples(d.size, n, seed)], ci)
    return {"delta": float(d.mean()), "low": lo, "high": hi}


def _sacrebleu_scorer(metric_fn: Callable) -> Callable[[list[str], list[str]], Callable] | None:
    """For this module's bleu/chrf: a function (preds, refs) -> score(indices) built on per-sentence sufficient
    statistics (n-gram match counts), the way sacrebleu's own paired bootstrap works. A corpus score on a
    resample is a function of the summed statistics, so this is exact and needs no re-tokenising."""
    import sacrebleu

    cls = {bleu: sacrebleu.BLEU, chrf: sacrebleu.CHRF}.get(metric_fn)
    if cls is None:
        return None
    metric = cls()  # the same defaults as sacrebleu.corpus_bleu / corpus_chrf

    def scorer(preds: list[str], refs: list[str]) -> Callable[[np.ndarray], float]:
        stats = np.asarray(metric._extract_corpus_statistics(preds, [refs]))
        return lambda idx: float(metric._compute_score_from_stats(stats[idx].sum(0)).score)

    return scorer


def bootstrap_corpus_delta(metric_fn: Callable[[list[str], list[str]], float], preds_a: list[str],
                           preds_b: list[str], refs: list[str], *, n: int = 200, seed: int = 0,
                           ci: float = 0.95) -> dict:
    """Paired bootstrap CI of metric_fn(preds_b, refs) - metric_fn(preds_a, refs): {"delta", "low", "high"}.

    For corpus-level metrics (BLEU, chrF, macro-F1) that are not means of per-example scores, so the metric
    is recomputed on every resample: 2n + 2 calls of metric_fn. Cost: corpus BLEU or chrF takes ~0.1 s per
    1,000 sentences, so n=200 would take ~40 s; for this module's `bleu` and `chrf` the resamples instead
    reuse per-sentence statistics (identical result, <1 s for 1,000 sentences). Any other metric_fn pays the
    full 2n calls; the modest default n=200 keeps that to seconds, at the price of noisier CI tails.
    """
    _check(preds_a, refs, ("predictions from a", "references"))
    _check(preds_b, refs, ("predictions from b", "references"))
    _check_bootstrap(n, ci)
    scorer = _sacrebleu_scorer(metric_fn)
    if scorer is not None:
        _check_text(preds_a, refs)
        _check_text(preds_b, refs)
        score_a, score_b = scorer(preds_a, refs), scorer(preds_b, refs)
        stat: Callable[[np.ndarray], float] = lambda idx: score_b(idx) - score_a(idx)  # noqa: E731
    else:
        def stat(idx: np.ndarray) -> float:
            r = [refs[i] for i in idx]
            return metric_fn([preds_b[i] for i in idx], r) - metric_fn([preds_a[i] for i in idx], r)

    lo, hi = _interval([stat(idx) for idx in _resamples(len(refs), n, seed)], ci)
    return {"delta": float(metric_fn(preds_b, refs) - metric_fn(preds_a, refs)), "low": lo, "high": hi}
