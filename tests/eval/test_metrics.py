"""Metrics agree with independent computations (scikit-learn, sacrebleu, rouge-score called directly).

Exact match and normalisation are checked by hand; bootstrap CIs against the normal approximation and coverage.
"""

import math
import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tuneforge.eval import metrics as M

PREDS = ["SELECT * FROM users;", "select name from products", "SELECT COUNT(*) FROM orders;", "the cat sat"]
REFS = ["SELECT * FROM users;", "SELECT name FROM products;", "SELECT COUNT(*) FROM users;", "the cat sat down"]


# ---- normalisation and exact match (by hand) ----------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("  Hello World  ", "hello world"),                  # strip + lowercase
    ("a \t b\n\nc", "a b c"),                           # whitespace runs collapse
    ("SELECT 1;", "select 1"), ("Done.", "done"),       # trailing ';' or '.'
    ("x;.", "x"), ("x ; ", "x"), ("3.5", "3.5"),        # the whole trailing run, only at the end
    ('say "hi"', "say 'hi'"), ("\u201chi\u201d \u2018yo\u2019", "'hi' 'yo'"),  # quotes → '
    ("COUNT( * )", "count(*)"), ("a , b", "a,b"),       # no spaces around , ( )
    ('  SELECT  "a" , b FROM t ; ', "select 'a',b from t"),
    ("", ""),
])
def test_normalize_by_hand(raw, expected):
    assert M.normalize_answer(raw) == expected
    assert M.normalize_answer(expected) == expected  # idempotent


def test_exact_match_strict_and_normalised_by_hand():
    assert M.exact_match_each(PREDS, REFS, normalized=False) == [1, 0, 0, 0]
    assert M.exact_match_each(PREDS, REFS, normalized=True) == [1, 1, 0, 0]
    assert M.exact_match(PREDS, REFS, normalized=False) == 0.25
    assert M.exact_match(PREDS, REFS, normalized=True) == 0.5
    # strict still ignores surrounding whitespace (a generation's trailing newline) but nothing else
    assert M.exact_match_each(["x\n", "X", "x."], ["x", "x", "x"], normalized=False) == [1, 0, 0]
    assert M.exact_match_each(["x\n", "X", "x."], ["x", "x", "x"], normalized=True) == [1, 1, 1]


# ---- text metrics vs sacrebleu / rouge-score ------------------------------------------------------------------

def test_bleu_and_chrf_match_sacrebleu():
    assert M.bleu(PREDS, REFS) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert M.chrf(PREDS, REFS) == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)
    assert M.bleu_each(PREDS, REFS) == pytest.approx(
        [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDS, REFS)])
    assert M.chrf_each(PREDS, REFS) == pytest.approx(
        [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(PREDS, REFS)])
    assert M.bleu(REFS, REFS) == pytest.approx(100.0) and M.bleu(["zzz"] * 4, REFS) == 0.0


def test_rouge_matches_rouge_score():
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [sc.score(r, p) for p, r in zip(PREDS, REFS)]
    each, mean = M.rouge_each(PREDS, REFS), M.rouge(PREDS, REFS)
    for k in ("rouge1", "rouge2", "rougeL"):
        assert each[k] == pytest.approx([s[k].fmeasure for s in scores])
        assert mean[k] == pytest.approx(sum(s[k].fmeasure for s in scores) / len(scores))
    # the stemmer is on: "cats sitting" matches "cat sit"
    assert M.rouge(["cats sitting"], ["cat sit"])["rouge1"] == pytest.approx(1.0)


def test_generation_metrics_bundle_and_dispatch():
    g = M.generation_metrics(PREDS, REFS)
    assert g == pytest.approx({"exact_match": 0.25, "exact_match_normalized": 0.5, "bleu": M.bleu(PREDS, REFS),
                               "chrf": M.chrf(PREDS, REFS), **M.rouge(PREDS, REFS)})
    assert M.metrics_for("generation", PREDS, REFS) == g
    assert M.metrics_for("classification", ["a"], ["a"])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="unknown task 'summarise'"):
        M.metrics_for("summarise", PREDS, REFS)


# ---- classification vs scikit-learn ----------------------------------------------------------------------------

def test_classification_matches_scikit_learn():
    refs = ["pos", "neg", "neg", "neu", "pos", "neu", "pos"]
    preds = ["pos", "neg", "pos", "neu", "maybe", "neg", " pos\n"]  # "maybe" is outside the label set
    got = M.classification_metrics(preds, refs)
    labels = ["neg", "neu", "pos"]
    mapped = ["pos", "neg", "pos", "neu", "<other>", "neg", "pos"]
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, mapped)) == pytest.approx(4 / 7)
    mp, mr, mf, _ = precision_recall_fscore_support(refs, mapped, labels=labels, average="macro", zero_division=0)
    assert (got["precision_macro"], got["recall_macro"], got["f1_macro"]) == pytest.approx((mp, mr, mf))
    p, r, f, s = precision_recall_fscore_support(refs, mapped, labels=labels, zero_division=0)
    assert list(got["per_label"]) == labels
    for i, lab in enumerate(labels):
        assert got["per_label"][lab] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    cm = got["confusion_matrix"]
    assert cm["labels"] == labels + ["<other>"]
    assert cm["matrix"] == confusion_matrix(refs, mapped, labels=cm["labels"]).tolist()
    # by hand: rows are references; "pos" was right twice and once predicted outside the label set
    assert cm["matrix"][2] == [0, 0, 2, 1] and cm["matrix"][3] == [0, 0, 0, 0]


def test_classification_with_explicit_labels_keeps_their_order():
    got = M.classification_metrics(["b", "a", "a"], ["b", "a", "b"], labels=["c", "b", "a", "b"])
    assert got["confusion_matrix"] == {"labels": ["c", "b", "a"], "matrix": [[0, 0, 0], [0, 1, 1], [0, 0, 1]]}
    assert got["per_label"]["c"]["support"] == 0
    # an unseen label counts in the macro average (scikit-learn semantics with labels=)
    _, r, _, _ = precision_recall_fscore_support(["b", "a", "b"], ["b", "a", "a"], labels=["c", "b", "a"],
                                                 average="macro", zero_division=0)
    assert got["recall_macro"] == pytest.approx(r) == pytest.approx((0 + 0.5 + 1) / 3)


def test_a_reference_label_outside_the_label_set_is_an_error():
    with pytest.raises(ValueError, match="'spam'"):
        M.classification_metrics(["a", "b"], ["a", "spam"], labels=["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        M.classification_metrics(["a"], ["a"], labels=[])
    with pytest.raises(ValueError, match="reserved"):
        M.classification_metrics(["a"], ["a"], labels=["a", "<other>"])


# ---- edge cases common to every metric -----------------------------------------------------------------------

PAIRED = [M.exact_match_each, M.exact_match, M.bleu, M.bleu_each, M.chrf, M.chrf_each, M.rouge, M.rouge_each,
          M.classification_metrics, M.generation_metrics]


@pytest.mark.parametrize("fn", PAIRED, ids=lambda f: f.__name__)
def test_length_mismatch_empty_input_and_non_strings_are_errors(fn):
    args = (True,) if fn in (M.exact_match, M.exact_match_each) else ()
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        fn(["a", "b"], ["a"], *args)
    with pytest.raises(ValueError, match="no examples"):
        fn([], [], *args)
    with pytest.raises(TypeError, match="prediction 1 is NoneType"):
        fn(["a", None], ["a", "b"], *args)


def test_empty_strings_are_scored_not_rejected():
    assert M.exact_match(["", "a"], ["", "b"], normalized=False) == 0.5
    assert M.bleu([""], ["a b c"]) == 0.0 and M.rouge([""], ["a"])["rouge1"] == 0.0


def test_perplexity_is_exp_mean_nll():
    assert M.perplexity(0.0, 5) == 1.0
    assert M.perplexity(10.0, 5) == pytest.approx(math.e ** 2)
    assert M.perplexity(1e6, 1) == math.inf
    for bad in ((1.0, 0), (-1.0, 3), (float("nan"), 3)):
        with pytest.raises(ValueError):
            M.perplexity(*bad)


# ---- bootstrap ---------------------------------------------------------------------------------------------

def test_bootstrap_ci_agrees_with_the_normal_approximation():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400).tolist()
    got = M.bootstrap_ci(x, n=2000, seed=0)
    se = float(np.std(x, ddof=1)) / math.sqrt(len(x))
    assert got["mean"] == pytest.approx(float(np.mean(x)))
    assert got["low"] == pytest.approx(got["mean"] - 1.96 * se, abs=0.2 * se)
    assert got["high"] == pytest.approx(got["mean"] + 1.96 * se, abs=0.2 * se)
    assert M.bootstrap_ci(x, seed=4) == M.bootstrap_ci(x, seed=4) != M.bootstrap_ci(x, seed=5)
    assert M.bootstrap_ci([0.7]) == {"mean": 0.7, "low": 0.7, "high": 0.7}


def test_paired_bootstrap_ci_covers_the_true_delta_and_is_reproducible():
    # 100 synthetic evals: a is right with p=0.6, b fixes 40% of a's errors → true delta = 0.4 * 0.4 = 0.16
    rng, covered = np.random.default_rng(0), 0
    for _ in range(100):
        a = (rng.random(200) < 0.6).astype(float)
        b = np.where(rng.random(200) < 0.4, 1.0, a)
        d = M.bootstrap_delta(a.tolist(), b.tolist(), n=300, seed=0)
        assert d["low"] <= d["delta"] <= d["high"]
        covered += d["low"] <= 0.16 <= d["high"]
    assert covered >= 85  # nominal 95%; binomial sd ~2
    a, b = [0, 1] * 50, [1, 1] * 50
    assert M.bootstrap_delta(a, b, seed=3) == M.bootstrap_delta(a, b, seed=3) != M.bootstrap_delta(a, b, seed=4)
    assert M.bootstrap_delta(a, b)["delta"] == 0.5
    assert M.bootstrap_delta(a, a) == {"delta": 0.0, "low": 0.0, "high": 0.0}


def test_pairing_is_what_makes_the_delta_ci_tight():
    rng = np.random.default_rng(2)
    difficulty = rng.random(300)  # shared per-example difficulty dominates the variance
    a, b = difficulty, difficulty + 0.05 + rng.normal(0, 0.01, 300)
    d = M.bootstrap_delta(a.tolist(), b.tolist(), seed=0)
    assert d["low"] > 0.04 and d["high"] < 0.06
    # the same seed draws the same examples: the paired delta CI is the CI of the per-example differences
    diff = M.bootstrap_ci((b - a).tolist(), seed=0)
    assert (d["low"], d["high"]) == pytest.approx((diff["low"], diff["high"]))


def test_corpus_bootstrap_fast_path_equals_recomputing_the_metric():
    rnd = random.Random(0)
    words = "select from where users orders count name id group by order limit".split()
    refs = [" ".join(rnd.choices(words, k=8)) for _ in range(40)]
    a = [" ".join(rnd.choices(words, k=8)) for _ in range(40)]
    b = [r if rnd.random() < 0.5 else x for r, x in zip(refs, a)]
    for fn in (M.bleu, M.chrf):
        fast = M.bootstrap_corpus_delta(fn, a, b, refs, n=30, seed=1)
        slow = M.bootstrap_corpus_delta(lambda p, r: fn(p, r), a, b, refs, n=30, seed=1)  # noqa: B023
        assert fast == pytest.approx(slow)
        assert fast["delta"] == pytest.approx(fn(b, refs) - fn(a, refs))
        assert 0 < fast["low"] <= fast["delta"] <= fast["high"]
    assert M.bootstrap_corpus_delta(M.bleu, a, b, refs, seed=2) == M.bootstrap_corpus_delta(M.bleu, a, b, refs,
                                                                                             seed=2)
    # a corpus metric that is a mean reproduces the per-example bootstrap exactly (same resamples per seed)
    em = lambda p, r: M.exact_match(p, r, normalized=True)  # noqa: E731
    assert M.bootstrap_corpus_delta(em, a, b, refs, n=100, seed=3) == pytest.approx(
        M.bootstrap_delta(M.exact_match_each(a, refs, True), M.exact_match_each(b, refs, True), n=100, seed=3))


def test_bootstrap_argument_errors():
    with pytest.raises(ValueError, match="no examples"):
        M.bootstrap_ci([])
    with pytest.raises(ValueError, match="no examples"):
        M.bootstrap_delta([], [])
    with pytest.raises(ValueError, match="3 scores for a but 2 scores for b"):
        M.bootstrap_delta([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="2 predictions from b but 1 references"):
        M.bootstrap_corpus_delta(M.bleu, ["a"], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="finite"):
        M.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="ci must be"):
        M.bootstrap_delta([1], [1], ci=95)
    with pytest.raises(ValueError, match="n \\(bootstrap resamples\\)"):
        M.bootstrap_ci([1.0], n=0)


# ---- calibration ----------------------------------------------------------------------------------------------

def test_expected_calibration_error_of_overconfident_and_calibrated_predictions():
    # always 90% sure, right half the time: one bin, |0.5 - 0.9|
    assert M.expected_calibration_error([0.9] * 10, [True, False] * 5) == pytest.approx(0.4)
    # two bins, weighted by their share: 0.75 * |1 - 0.95| + 0.25 * |0 - 0.55|
    conf, ok = [0.95, 0.95, 0.95, 0.55], [True, True, True, False]
    assert M.expected_calibration_error(conf, ok) == pytest.approx(0.75 * 0.05 + 0.25 * 0.55)
    # outcomes drawn with exactly the stated probability: close to 0
    rng = np.random.default_rng(0)
    c = rng.uniform(0.5, 1.0, 20_000)
    assert M.expected_calibration_error(c, rng.uniform(size=c.size) < c) < 0.02
    assert M.expected_calibration_error([0.0, 1.0], [False, True]) == 0.0  # 0 joins the first bin


def test_expected_calibration_error_rejects_bad_input():
    with pytest.raises(ValueError, match="must pair up"):
        M.expected_calibration_error([0.5], [True, False])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.expected_calibration_error([1.5], [True])
