"""The DPO-family losses equal hand-computed values on fixed log-probs; answer log-probs from the packed fast path
equal a position-by-position softmax over the full logits; the LoRA reference is the base model itself."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.config import TrainConfig
from tuneforge.data.formats import Preference
from tuneforge.data.tokenize import encode_preference
from tuneforge.models.tiny import tiny_model, tiny_tokenizer
from tuneforge.train.objectives import dpo

# two pairs: summed answer log-probs of policy (pc, pr) and reference (rc, rr), answer lengths (lc, lr)
PC, PR = torch.tensor([-10.0, -6.0]), torch.tensor([-12.0, -5.0])
RC, RR = torch.tensor([-11.0, -6.5]), torch.tensor([-11.0, -4.0])
LC, LR = torch.tensor([4, 2]), torch.tensor([5, 1])


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_sigmoid_dpo_equals_the_formula_by_hand():
    out = dpo.pair_loss("sigmoid", PC, PR, RC, RR, LC, LR, beta=None)  # default beta 0.1
    # pair 0: (−10+11) − (−12+11) = 2 → −log σ(0.2); pair 1: (−6+6.5) − (−5+4) = 1.5 → −log σ(0.15)
    want = [-math.log(sig(0.2)), -math.log(sig(0.15))]
    assert out.losses.tolist() == pytest.approx(want, rel=1e-6)
    assert out.losses.tolist() == pytest.approx([0.598138869, 0.620957077], rel=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1, 0.05])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.1, -0.1])
    m = dpo.metrics_of(out, PC, PR)
    assert m["accuracy"] == 2 and m["reward_margin"] == pytest.approx(0.2 + 0.15)


def test_ipo_simpo_orpo_equal_their_formulas_by_hand():
    ipo = dpo.pair_loss("ipo", PC, PR, RC, RR, LC, LR, beta=0.5)
    h = ((-10 / 4 + 11 / 4) - (-12 / 5 + 11 / 5)) - 1 / (2 * 0.5)  # per-token averages, target 1/(2β)
    assert ipo.losses[0].item() == pytest.approx(h ** 2, rel=1e-6)
    simpo = dpo.pair_loss("simpo", PC, PR, None, None, LC, LR, beta=None, gamma=0.5)  # default beta 2.0
    assert simpo.losses[1].item() == pytest.approx(-math.log(sig(2.0 * (-6 / 2 - -5 / 1) - 0.5)), rel=1e-6)
    orpo = dpo.pair_loss("orpo", PC, PR, None, None, LC, LR, beta=0.1)
    ac, ar = -10 / 4, -12 / 5
    log_odds = (ac - math.log(1 - math.exp(ac))) - (ar - math.log(1 - math.exp(ar)))
    assert orpo.losses[0].item() == pytest.approx(-ac - 0.1 * math.log(sig(log_odds)), rel=1e-6)


def _pairs(tok):
    rows = [("2+2?", "four", "five, I believe"), ("capital of France", "Paris.", "London"),
            ("say hi", "hi there, friend", "no")]
    return [encode_preference(Preference(prompt=[{"role": "user", "content": q}],
                                         chosen=[{"role": "assistant", "content": c}],
                                         rejected=[{"role": "assistant", "content": r}]), tok)
            for q, c, r in rows]


def _by_hand(model, pairs):
    """Each sequence alone, full logits, log-softmax, the answer positions summed in a Python loop."""
    out = []
    for p in pairs:
        for e in (p.chosen, p.rejected):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            out.append(sum(lp[j - 1, e.input_ids[j]].item() for j in range(1, len(e.labels)) if e.labels[j] != -100))
    return out


@pytest.mark.parametrize("packing", [True, False])
def test_answer_logps_match_a_full_softmax_by_hand(packing, monkeypatch):
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    pairs = _pairs(tok)
    monkeypatch.setattr(dpo, "CHUNK", 5)  # several output-layer chunks
    with torch.no_grad():
        sums, counts = dpo.answer_logps(model, dpo.collate_pairs(pairs, packing=packing, pad_id=tok.pad_token_id))
    assert sums.tolist() == pytest.approx(_by_hand(model, pairs), rel=1e-4, abs=1e-4)
    assert counts.tolist() == [e.n_supervised for p in pairs for e in (p.chosen, p.rejected)]


def test_lora_reference_is_the_base_with_the_adapter_disabled():
    from tuneforge import methods

    tok = tiny_tokenizer()
    base = tiny_model(tok).eval()
    model = methods.prepare(tiny_model(tok), TrainConfig(method="lora", lora_dropout=0.0))
    with torch.no_grad():  # a trained-looking adapter: the policy now differs from the base
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    batch = dpo.collate_pairs(_pairs(tok), packing=True, pad_id=tok.pad_token_id)
    ref = dpo.reference_logps_adapter_disabled(model, batch)
    with torch.no_grad():
        want = dpo.answer_logps(base, batch)[0]
        policy = dpo.answer_logps(model, batch)[0]
    torch.testing.assert_close(ref, want, rtol=1e-5, atol=1e-4)
    assert (policy - want).abs().max() > 1e-2  # the adapter is on again after the reference pass


def test_per_token_chosen_log_probs_are_reported_against_the_reference():
    out = dpo.pair_loss("sigmoid", PC, PR, RC, RR, LC, LR, beta=None)
    m = dpo.metrics_of(out, PC, PR, LC, RC)
    assert m["logp_chosen_tok"] == pytest.approx(-10 / 4 + -6 / 2)
    assert m["ref_logp_chosen_tok"] == pytest.approx(-11 / 4 + -6.5 / 2)
    assert "ref_logp_chosen_tok" not in dpo.metrics_of(out, PC, PR, LC)  # reference-free losses


def test_collapse_warning_fires_when_preferred_answers_fall_below_the_reference_not_before():
    healthy = [{"step": 12, "val_loss": 0.4, "val_logp_chosen_tok": -1.9, "val_ref_logp_chosen_tok": -2.1}]
    assert dpo.collapse_warning(healthy) is None
    # the SmolLM2 collapse at lr 1e-3: the margin grows while the preferred answer becomes far less likely
    collapsed = healthy + [{"step": 30, "val_loss": 1e-4, "val_logp_chosen_tok": -8.0,
                            "val_ref_logp_chosen_tok": -2.1}]
    msg = dpo.collapse_warning(collapsed)
    assert msg and "5.9 nats per token" in msg and "step 30" in msg and "--learning_rate" in msg
    # reference-free (simpo/orpo): measured against the first validation
    free = [{"step": 10, "val_logp_chosen_tok": -2.0}, {"step": 20, "val_logp_chosen_tok": -2.8}]
    assert dpo.collapse_warning(free) is None
    assert dpo.collapse_warning(free + [{"step": 30, "val_logp_chosen_tok": -3.5}])
