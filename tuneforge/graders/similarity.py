"""text_similarity metrics, each a score in [0, 1] for one (input, reference) pair.

bleu is sacrebleu's sentence BLEU and rouge_1/2/l rouge_score's F-measure with the Porter stemmer: the same scorers
as `eval.metrics.bleu_each` (there on 0-100) and `eval.metrics.rouge_each`, so a grader and `tuneforge eval` agree
(tests/graders check it). rouge_3..5 are rouge_score's n-gram variants. fuzzy_match: OpenAI says "rapidfuzz" without
naming the scorer; we use `fuzz.WRatio` with rapidfuzz's default processing, as OpenAI's own python-grader example
does. gleu is Google-BLEU (min of n-gram precision and recall, n = 1..4, as nltk's sentence_gleu). meteor needs
WordNet data and cosine an embedding model: both are rejected by validation.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
UNSUPPORTED = {"meteor": "needs NLTK's WordNet data", "cosine": "needs an embedding model (OpenAI: evals only)"}


@lru_cache(maxsize=None)
def _rouge(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def gleu(hyp: str, ref: str, max_n: int = 4) -> float:
    h, r = hyp.split(), ref.split()
    hc, rc = Counter(), Counter()
    for n in range(1, max_n + 1):
        hc.update(_ngrams(h, n))
        rc.update(_ngrams(r, n))
    total = max(sum(hc.values()), sum(rc.values()))
    return sum((hc & rc).values()) / total if total else 0.0


def score(metric: str, hyp: str, ref: str) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz, utils

        return float(fuzz.WRatio(hyp, ref, processor=utils.default_process)) / 100.0
    if metric == "bleu":
        import sacrebleu

        return float(sacrebleu.sentence_bleu(hyp, [ref]).score) / 100.0
    if metric == "gleu":
        return gleu(hyp, ref)
    if metric.startswith("rouge_"):
        kind = "rougeL" if metric == "rouge_l" else "rouge" + metric.split("_")[1]
        return float(_rouge(kind).score(ref, hyp)[kind].fmeasure)
    raise ValueError(f"unknown evaluation_metric {metric!r}")
