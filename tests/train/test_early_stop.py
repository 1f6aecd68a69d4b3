"""Early stopping, the typed loop state and restoring the best weights at the end of a run."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.train.early_stop import IMPROVEMENT, LoopState, after_evaluation


def _evals(state: LoopState, losses: list[float], patience: int) -> list:
    out, history = [], []
    for i, v in enumerate(losses, 1):
        state.step = 10 * i
        history.append({"step": state.step, "val_loss": v})
        out.append(after_evaluation(state, v, patience=patience, history=history))
    return out


def test_best_is_kept_and_patience_counts_evaluations_without_improvement():
    state = LoopState()
    evs = _evals(state, [2.0, 1.5, 1.6, 1.55, 1.7], patience=3)
    assert [e.improved for e in evs] == [True, True, False, False, False]
    assert [e.stop for e in evs] == [False, False, False, False, True]
    assert state.best_val == 1.5 and state.best_step == 20 and state.bad_evals == 3 and state.stopped_early


def test_patience_zero_never_stops():
    state = LoopState()
    assert not any(e.stop for e in _evals(state, [1.0, 2.0, 3.0, 4.0, 5.0], patience=0))


def test_an_improvement_smaller_than_noise_does_not_reset_patience():
    state = LoopState()
    evs = _evals(state, [1.0, 1.0 - IMPROVEMENT / 2, 1.0 - 2 * IMPROVEMENT], patience=5)
    assert [e.improved for e in evs] == [True, False, True]


def test_overfitting_warning_is_given_once():
    state, history = LoopState(), []
    warnings = []
    for i, (train, val) in enumerate([(3.0, 2.0), (2.0, 1.5), (1.5, 1.6), (1.0, 1.7), (0.5, 1.8)], 1):
        history += [{"step": i, "loss": train}, {"step": i, "val_loss": val, "epoch": i}]
        state.step = i
        warnings.append(after_evaluation(state, val, patience=0, history=history).warning)
    assert [w is not None for w in warnings] == [False, False, False, True, False]
    assert state.warned_overfitting


def test_loop_state_round_trips_through_a_checkpoint_and_reads_older_ones():
    s = LoopState(step=7, best_val=1.25, best_step=5, bad_evals=1, elapsed=3.5, tokens=99, warned_overfitting=True)
    assert LoopState.from_json(s.to_json()) == s
    old = {"schema": 1, "step": 4, "best_val": 2.0, "best_step": 4, "bad_evals": 0, "elapsed": 1.0,
           "tokens": 10, "warned": True}  # a checkpoint written before LoopState existed
    assert LoopState.from_json(old) == LoopState(step=4, best_val=2.0, best_step=4, elapsed=1.0, tokens=10,
                                                 warned_overfitting=True)


def test_finish_restores_the_best_weights_not_the_last(tiny_dir, tmp_path):
    from tuneforge.config import TrainConfig
    from tuneforge.run import write_atomic_dir
    from tuneforge.train import checkpoint
    from tuneforge.train.recipe import finish, prepare

    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(40))
    out = tmp_path / "run"
    p = prepare(TrainConfig(base=str(tiny_dir), data=str(data), output=str(out)))
    with torch.no_grad():
        for prm in p.model.parameters():
            if prm.requires_grad:
                prm.add_(0.5)  # "the best step"
    best = checkpoint.trainable_state(p.model)
    write_atomic_dir(out / "best", lambda d: checkpoint.save_file(best, d / "trainable.safetensors"))
    with torch.no_grad():
        for prm in p.model.parameters():
            if prm.requires_grad:
                prm.add_(1.0)  # later, worse steps
    finish(p, out, LoopState(step=9, best_val=1.0, best_step=5))
    from safetensors.torch import load_file

    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert saved and not (out / "best").exists()
    now = checkpoint.trainable_state(p.model)
    for name, t in best.items():
        assert torch.equal(now[name], t), name


@pytest.mark.parametrize("n,batch,accum,epochs,max_steps,want", [
    (100, 8, 1, 3, -1, (39, 13, 7)),    # 13 micro-batches/epoch; validate twice per epoch
    (100, 8, 2, 3, -1, (18, 6, 3)),     # accumulation: 13 // 2 optimizer steps per epoch
    (8, 8, 1, 3, -1, (3, 1, 1)),        # one step per epoch: still validates every step
    (100, 8, 1, 3, 5, (5, 13, 7)),      # max_steps wins over epochs
    (100, 8, 1, 0.5, -1, (7, 13, 7)),   # fractional epochs round up
])
def test_schedule_counts_steps_per_epoch_and_eval_interval(n, batch, accum, epochs, max_steps, want):
    from tuneforge.config import TrainConfig
    from tuneforge.train.recipe import Prepared, schedule

    cfg = TrainConfig(data="x", per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                      num_train_epochs=epochs, max_steps=max_steps)
    assert schedule(Prepared(cfg, None, None, [None] * n, [], {})) == want


def test_lr_schedule_warms_up_then_decays_to_zero():
    from tuneforge.config import TrainConfig
    from tuneforge.train.recipe import make_scheduler

    def lrs(kind: str) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, TrainConfig(warmup_steps=2, lr_scheduler_type=kind), total=10)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    lin = lrs("linear")
    assert lin[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lin[2:] == sorted(lin[2:], reverse=True) and lin[-1] == pytest.approx(1 / 8)
    cos = lrs("cosine")
    assert cos[2] == pytest.approx(1.0) and cos[6] == pytest.approx(0.5)
    assert lrs("constant")[2:] == [1.0] * 8
