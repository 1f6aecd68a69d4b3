"""The drift statistics on their own: PSI, the KS-and-PSI length rule, the MMD permutation test, the new-token
rate against the training data's own, the empty/truncated rate, the feedback drop; --since parsing."""

from __future__ import annotations

import numpy as np
import pytest

from tuneforge.errors import ConfigError
from tuneforge.monitor.drift import (bad_answer_signal, feedback_signal, length_signal, mmd_permutation_test,
                                     new_token_rate, psi)
from tuneforge.monitor.query import parse_since


def test_psi_is_zero_for_one_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(50, 10, 5000)
    assert psi(ref, rng.normal(50, 10, 5000)) < 0.02
    assert psi(ref, rng.normal(65, 10, 5000)) > 0.5
    assert psi([3] * 100, [3] * 50) < 0.02  # one value on both sides: nothing moved
    assert psi([36, 37, 38] * 30, [300] * 40) > 5  # beyond anything in training: its own bin, not the top one


def test_few_requests_of_the_same_distribution_are_not_drift_although_psi_alone_would_say_so():
    rng = np.random.default_rng(1)
    ref = rng.poisson(30, 300)
    fired_psi = flagged = 0
    for _ in range(30):
        prod = rng.poisson(30, 25)
        sig = length_signal("prompt_length", "input", list(ref), list(prod))
        fired_psi += sig.detail["psi"] > 0.2
        flagged += bool(sig.drift)
    assert fired_psi >= 3  # PSI > 0.2 on small samples is noise (the docstring's reason for the KS guard) ...
    assert flagged == 0  # ... and the combined rule does not alarm on it


def test_a_length_shift_is_drift_with_both_statistics_reported():
    rng = np.random.default_rng(2)
    sig = length_signal("prompt_length", "input", list(rng.poisson(30, 300)), list(rng.poisson(80, 40)))
    assert sig.drift is True and sig.p_value < 1e-6 and sig.statistic > 0.2
    assert sig.detail["production_mean"] > 2 * sig.detail["reference_mean"] / 1.2


def test_too_few_requests_is_not_a_verdict():
    sig = length_signal("prompt_length", "input", list(range(100)), [1, 2, 3])
    assert sig.drift is None and sig.verdict == "n/a" and "needs 20+" in sig.note


def test_mmd_permutation_p_value_is_calibrated_and_finds_a_shift():
    rng = np.random.default_rng(3)
    null_p = [mmd_permutation_test(rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), permutations=200,
                                   seed=i)[1] for i in range(40)]
    assert 0.35 < float(np.mean(null_p)) < 0.65  # uniform under the null
    assert sum(p < 0.05 for p in null_p) <= 6
    shifted = rng.normal(size=(40, 8))
    shifted[:, :2] += 1.5  # two of eight features moved by 1.5 standard deviations
    mmd2, p = mmd_permutation_test(rng.normal(size=(40, 8)), shifted, permutations=200)
    assert p < 0.01 and mmd2 > 0


def test_new_token_rate_is_judged_against_the_training_datas_own_rate():
    rng = np.random.default_rng(4)
    ref = [list(rng.integers(0, 50, 12)) for _ in range(200)]
    same = new_token_rate(ref, [list(rng.integers(0, 50, 12)) for _ in range(40)])
    assert same.drift is False and same.statistic == 0.0 and same.detail["baseline"] == 0.0
    new = new_token_rate(ref, [list(rng.integers(0, 50, 6)) + list(rng.integers(500, 520, 6)) for _ in range(40)],
                         decode=lambda ids: f"tok{ids[0]}")
    assert new.drift is True and new.statistic == pytest.approx(0.5)
    assert all(t.startswith("tok5") for t in new.detail["top_new_tokens"])
    # a naturally diverse dataset: production as diverse as training is not drift
    wide = [list(rng.integers(0, 5000, 12)) for _ in range(200)]
    diverse = new_token_rate(wide, [list(rng.integers(0, 5000, 12)) for _ in range(40)])
    assert diverse.statistic > 0.1 and diverse.detail["baseline"] > 0.1 and diverse.drift is False


def test_empty_or_truncated_rate():
    ok = {"n_choices": 1, "completion_chars": 5, "finish_reason": "stop"}
    rows = [ok] * 18 + [{"n_choices": 1, "completion_chars": 0, "finish_reason": "stop"},
                        {"n_choices": 1, "completion_chars": 9, "finish_reason": "length"}]
    assert bad_answer_signal(rows).drift is False  # 2 of 20 = 10%: not above the threshold
    sig = bad_answer_signal(rows + [{"n_choices": 1, "completion_chars": 9, "finish_reason": "length"}] * 3)
    assert sig.drift is True and sig.detail["truncated"] == 4 and sig.detail["empty"] == 1


def test_feedback_drop_against_earlier_feedback_or_the_windows_first_half():
    up, down = [{"score": 1.0}] * 12, [{"score": 0.0}] * 12
    mixed = [{"score": s} for s in [1.0, 0.0, 1.0, 1.0] * 3]
    assert feedback_signal(up, down).drift is True
    small = feedback_signal(up, mixed)  # fell by 0.25, but 3 thumbs-down in 12 could be chance (p ≈ 0.04)
    assert small.statistic == pytest.approx(0.25) and 0.01 < small.p_value < 0.1 and small.drift is False
    assert feedback_signal(mixed, mixed).drift is False
    assert feedback_signal([], up + down).drift is True  # no earlier feedback: later half vs earlier half
    assert feedback_signal([], down + up).drift is False  # it got better
    assert feedback_signal([], up[:5]).drift is None


def test_since_accepts_durations_dates_and_unix_seconds():
    now = 1_000_000.0
    assert parse_since("30m", now=now) == now - 1800
    assert parse_since("2d", now=now) == now - 172800
    assert parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2025-06-01") == parse_since("2025-06-01T00:00:00Z")
    assert parse_since(None) is None
    with pytest.raises(ConfigError, match="--since yesterday"):
        parse_since("yesterday")
