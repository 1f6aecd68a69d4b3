"""Metrics agree with independent computations (scikit-learn, sacrebleu, rouge-score called directly)."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from tuneforge.eval import metrics as M

PREDS = ["SELECT * FROM users;", "select name from products", "SELECT COUNT(*) FROM orders;", "the cat sat"]
REFS = ["SELECT * FROM users;", "SELECT name FROM products;", "SELECT COUNT(*) FROM users;", "the cat sat down"]


def test_exact_match_strict_and_normalised_by_hand():
    assert M.exact_match(PREDS, REFS, normalized=False) == 0.25
    assert M.exact_match_each(PREDS, REFS, normalized=True) == [1, 1, 0, 0]
    assert M.normalize('  SELECT  "a" , b FROM t ; ') == "select 'a',b from t"


def test_bleu_and_chrf_match_sacrebleu():
    assert M.bleu(PREDS, REFS) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert M.chrf(PREDS, REFS) == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)
    assert M.bleu_each(PREDS, REFS)[1] == pytest.approx(sacrebleu.sentence_bleu(PREDS[1], [REFS[1]]).score)


def test_rouge_matches_rouge_score():
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expect = {k: sum(sc.score(r, p)[k].fmeasure for p, r in zip(PREDS, REFS)) / len(REFS)
              for k in ("rouge1", "rouge2", "rougeL")}
    got = M.rouge(PREDS, REFS)
    for k in expect:
        assert got[k] == pytest.approx(expect[k])


def test_classification_matches_scikit_learn():
    refs = ["pos", "neg", "neg", "neu", "pos", "neu"]
    preds = ["pos", "neg", "pos", "neu", "maybe", "neg"]
    got = M.classification_metrics(preds, refs)
    labels = ["neg", "neu", "pos"]
    mapped = [p if p in labels else "<other>" for p in preds]
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, mapped))
    assert got["f1_macro"] == pytest.approx(f1_score(refs, mapped, labels=labels, average="macro", zero_division=0))
    assert got["precision_macro"] == pytest.approx(
        precision_score(refs, mapped, labels=labels, average="macro", zero_division=0))
    assert got["recall_macro"] == pytest.approx(
        recall_score(refs, mapped, labels=labels, average="macro", zero_division=0))
    cm = got["confusion_matrix"]
    assert cm["labels"] == ["neg", "neu", "pos", "<other>"]
    assert cm["matrix"][2] == [0, 0, 1, 1]  # "pos": one right, one predicted outside the label set


def test_a_reference_label_outside_the_label_set_is_an_error():
    with pytest.raises(ValueError, match="spam"):
        M.classification_metrics(["a"], ["spam"], labels=["a", "b"])


def test_length_mismatch_and_empty_input_are_errors():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        M.exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        M.bleu([], [])


def test_paired_bootstrap_ci_covers_the_true_delta_and_is_reproducible():
    a = [0, 1] * 50
    b = [1, 1] * 50
    d = M.bootstrap_delta(a, b, seed=3)
    assert d["delta"] == pytest.approx(0.5)
    assert d["low"] <= 0.5 <= d["high"] and d["high"] - d["low"] < 0.4
    assert M.bootstrap_delta(a, b, seed=3) == d
    assert M.bootstrap_delta(a, a)["low"] == M.bootstrap_delta(a, a)["high"] == 0


def test_perplexity_is_exp_mean_nll():
    assert M.perplexity(0.0, 5) == 1.0
    assert M.perplexity(10.0, 5) == pytest.approx(7.389056, rel=1e-5)
