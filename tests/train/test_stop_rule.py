"""Issue 23: validation decides how long a run trains. The stop keeps the best step's exact weights, says why in
run.json and the model card, and a run killed after an evaluation resumes with the same patience counter and
learning-rate scale (so it stops where the uninterrupted run stopped)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.train.early_stop import LoopState
from tuneforge.train.recipe import train

# lr 0.1 on the tiny model: val loss improves, stalls once (rate halved), improves again, then stalls for good
PLATEAU = dict(lr_scheduler_type="plateau", per_device_train_batch_size=4, eval_steps=2, learning_rate=0.1,
               early_stopping_patience=2,
               seed=3, val_split=0.25, max_seq_len=64, save_total_limit=50)


def _cfg(tiny_dir, tmp_path, out: str, **over) -> TrainConfig:
    data = tmp_path / "d.jsonl"
    if not data.exists():
        write_jsonl(data, arithmetic_rows(64))
    return TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / out), **{**PLATEAU, **over})


def _rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _reference(tiny_dir, tmp_path_factory, name: str, **over):
    tmp = tmp_path_factory.mktemp(name)
    return train(_cfg(tiny_dir, tmp, "ref", **over), progress=False), tmp


@pytest.fixture(scope="module")
def plateau_run(tiny_dir, tmp_path_factory):
    return _reference(tiny_dir, tmp_path_factory, "plateau")


def test_a_plateau_stops_the_run_keeps_the_best_steps_exact_weights_and_says_why(plateau_run):
    run, _ = plateau_run
    info = json.loads((run / "run.json").read_text())
    evals = [r for r in _rows(run) if "val_loss" in r]
    assert info["stopped_early"] and info["steps"] < 72  # 6 epochs of 12 steps planned (epochs auto: a cap)
    best = info["best_step"]
    assert best < info["steps"] and [r["step"] for r in evals][-1] == info["steps"]
    assert min(evals, key=lambda r: (-r["val_exact_match"], r["val_loss"]))["step"] == best
    reason = info["stop_reason"]
    assert reason == (f"validation loss and exact match flat for 2 evaluations; best at step {best} of 72 planned "
                      "(6 epochs)")
    assert f"training stopped: {reason}" in (run / "README.md").read_text()
    # the adapter is byte-identical to the best step's checkpoint
    ckpt = load_file(run / "checkpoints" / f"step-{best}" / "trainable.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == len(ckpt)
    for name, t in ckpt.items():
        assert torch.equal(adapter[name.replace(".default", "")], t), name
    last = load_file(run / "checkpoints" / f"step-{info['steps'] - 2}" / "trainable.safetensors")
    assert any(not torch.equal(last[k], ckpt[k]) for k in ckpt)  # later weights differ: the choice mattered


def test_the_plateau_schedule_halves_the_rate_at_each_evaluation_without_progress(plateau_run):
    run, _ = plateau_run
    rows = _rows(run)
    lr = {r["step"]: r["lr"] for r in rows if "lr" in r}
    evals = [r for r in rows if "val_loss" in r]
    stalls = [r["step"] for prev, r in zip(evals, evals[1:]) if r["best_val_loss"] == prev["best_val_loss"]]
    assert stalls  # the scenario has at least one stall before the stop
    for s in stalls:
        if s + 1 in lr and s >= 6:  # past the 4-step warm-up
            assert lr[s + 1] == pytest.approx(lr[s] / 2)  # halved from the very next step


def test_a_run_killed_after_an_evaluation_resumes_with_the_same_patience_and_rate(plateau_run, tiny_dir):
    ref, tmp = plateau_run
    ref_info = json.loads((ref / "run.json").read_text())
    evals = [r for r in _rows(ref) if "val_loss" in r]
    # the first evaluation without progress that the run survived: patience 1 of 2 used there
    stall = next(r["step"] for prev, r in zip(evals, evals[1:]) if r["best_val_loss"] == prev["best_val_loss"])

    def crash(report):
        if report.step == stall + 1:
            raise KeyboardInterrupt  # dies mid-run: the last checkpoint is the one written at the evaluation
        return True

    cfg = _cfg(tiny_dir, tmp, "killed")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=crash)
    state = LoopState.from_json(json.loads((tmp / "killed" / "checkpoints" / f"step-{stall}" / "state.json")
                                           .read_text()))
    assert state.bad_evals == 1 and state.lr_scale == 0.5
    run = train(cfg, resume=True, progress=False)
    info = json.loads((run / "run.json").read_text())
    for k in ("steps", "best_step", "stop_reason", "stopped_early"):
        assert info[k] == ref_info[k], k
    assert [r["val_loss"] for r in _rows(run) if "val_loss" in r] == pytest.approx([r["val_loss"] for r in evals])


# --- the rules at their boundaries (pure) -------------------------------------------------------------------------

def test_progress_is_loss_or_metric_and_the_best_weights_are_by_metric_then_loss():
    from tuneforge.train.early_stop import IMPROVEMENT, after_evaluation

    s, hist = LoopState(), []

    def ev(loss, em, step):
        s.step = step
        return after_evaluation(s, loss, metric=em, patience=3, history=hist, decay=0.5)

    assert ev(2.0, 0.1, 5).improved and s.best_step == 5
    e = ev(2.2, 0.3, 10)  # loss worse, exact match better: progress, and these are the best weights
    assert e.improved and e.progress and s.best_step == 10 and s.best_val == 2.0 and s.lr_scale == 1.0
    e = ev(1.9, 0.2, 15)  # loss better, exact match worse: progress (patience resets), weights not the best
    assert e.progress and not e.improved and s.best_step == 10 and s.bad_evals == 0
    e = ev(2.1, 0.3, 20)  # same exact match, loss above the best step's 2.2 - noise? 2.1 < 2.2: better weights
    assert e.improved and s.best_step == 20 and not e.progress and s.bad_evals == 1 and s.lr_scale == 0.5
    e = ev(2.1 - IMPROVEMENT / 2, 0.3, 25)  # a tie within noise: neither progress nor better weights
    assert not e.improved and not e.progress and s.bad_evals == 2 and s.lr_scale == 0.25 and e.lr_changed
    e = ev(2.5, 0.25, 30)
    assert e.stop and s.stopped_early and s.best_step == 20


def test_without_a_metric_or_decay_the_rule_is_the_loss_alone():
    from tuneforge.train.early_stop import after_evaluation

    s = LoopState()
    for step, loss in enumerate([2.0, 1.5, 1.6], 1):
        s.step = step
        e = after_evaluation(s, loss, patience=2, history=[])
    assert s.best_step == 2 and s.bad_evals == 1 and s.lr_scale == 1.0 and not e.lr_changed and not e.stop


def test_stop_reason_names_what_stopped_the_run():
    from tuneforge.train.early_stop import stop_reason

    s = LoopState(step=180, best_step=140, stopped_early=True)
    assert stop_reason(s, total=300, patience=3, metric_name="exact match", planned="6 epochs") == \
        "validation loss and exact match flat for 3 evaluations; best at step 140 of 300 planned (6 epochs)"
    s = LoopState(step=300, best_step=290)
    assert stop_reason(s, total=300, patience=3, planned="max_steps 300") == \
        "reached the planned 300 steps (max_steps 300); best at step 290"
    assert stop_reason(LoopState(step=30), total=30, patience=0) == "reached the planned 30 steps"


def test_plateau_schedule_warms_up_then_follows_the_scale_and_linear_reaches_zero_at_the_total():
    from tuneforge.train.schedule import WARMUP_HORIZON_EPOCHS, lr_factor, make_scheduler, refresh, warmup_steps

    assert [lr_factor("plateau", k, 3, 100) for k in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor("plateau", 50, 3, 100, scale=0.25) == 0.25 and lr_factor("plateau", 99, 3, 100) == 1.0
    assert lr_factor("linear", 100, 0, 100) == 0.0 and lr_factor("linear", 0, 0, 100) == 1.0
    cfg = TrainConfig(lr_scheduler_type="plateau", warmup_ratio=0.1)
    # the warm-up counts against the first WARMUP_HORIZON_EPOCHS passes, not the whole cap
    assert warmup_steps(cfg, total=600, steps_per_epoch=20) == 6 == round(0.1 * WARMUP_HORIZON_EPOCHS * 20)
    assert warmup_steps(cfg, total=40, steps_per_epoch=20) == 4  # shorter than the horizon: of the total
    assert warmup_steps(TrainConfig(lr_scheduler_type="linear"), total=600, steps_per_epoch=20) == 60
    assert warmup_steps(TrainConfig(lr_scheduler_type="plateau", warmup_steps=7), 600, 20) == 7
    scale = [1.0]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, TrainConfig(lr_scheduler_type="plateau", warmup_steps=1), 50, 10,
                           scale=lambda: scale[0])
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0
    scale[0] = 0.5
    refresh(sched)  # applies from the very next step
    assert opt.param_groups[0]["lr"] == 0.5 and sched.get_last_lr() == [0.5]


def test_auto_picks_a_cap_and_cosine_only_when_validation_can_stop_the_run():
    from tuneforge.train import auto

    cfg = TrainConfig(method="lora")
    why = auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
    assert cfg.num_train_epochs == auto.CAP_EPOCHS and cfg.lr_scheduler_type == "cosine"
    assert "validation decides" in why["num_train_epochs"]
    cfg = TrainConfig(method="lora")  # no validation set: a fixed length, so a decay to it
    auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=0)
    assert cfg.num_train_epochs == auto.NO_VAL_EPOCHS and cfg.lr_scheduler_type == "linear"
    cfg = TrainConfig(method="lora", early_stopping_patience=0)
    auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
    assert cfg.num_train_epochs == auto.NO_VAL_EPOCHS and cfg.lr_scheduler_type == "linear"
    for explicit in ({"num_train_epochs": 3}, {"max_steps": 40}):  # the user fixed the length
        cfg = TrainConfig(method="lora", **explicit)
        auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
        assert cfg.lr_scheduler_type == "linear"
    for objective in ("dpo", "grpo"):  # they keep the schedule their no-flag results were measured on
        cfg = TrainConfig(method="lora", objective=objective)
        why = auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
        assert cfg.lr_scheduler_type == "plateau" and f"objective {objective}" in why["lr_scheduler_type"]
    cfg = TrainConfig(method="lora", lr_scheduler_type="plateau")
    assert "lr_scheduler_type" not in auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
    assert cfg.lr_scheduler_type == "plateau"


@pytest.mark.parametrize("spe, every", [(1, 1), (4, 4), (5, 5), (20, 5), (21, 6), (100, 25)])
def test_eval_interval_is_a_quarter_epoch_but_not_under_five_steps_nor_over_an_epoch(spe, every):
    from tuneforge.train import auto

    assert auto.eval_interval(spe) == every


def test_an_exact_tie_keeps_the_later_weights_but_is_not_progress():
    from tuneforge.train.early_stop import after_evaluation

    s = LoopState()
    for step, loss in [(15, -0.167), (30, -0.167), (45, -0.167)]:  # GRPO: val_loss = -mean grader score
        s.step = step
        e = after_evaluation(s, loss, patience=3, history=[], decay=0.5)
    assert s.best_step == 45 and e.improved and not e.progress and s.bad_evals == 2
    s.step = 60
    e = after_evaluation(s, -0.167 + 1e-6, patience=3, history=[], decay=0.5)  # worse, however slightly: not kept
    assert not e.improved and s.best_step == 45 and e.stop


# --- annealing on stop: the patience used up at a high rate decays it to zero first --------------------------------

def test_patience_used_up_with_anneal_steps_starts_a_decay_instead_of_stopping():
    from tuneforge.train.early_stop import after_evaluation, anneal_done, anneal_factor, stop_reason

    s = LoopState()
    for step, loss in [(6, 1.0), (12, 1.1), (18, 1.2)]:
        s.step = step
        e = after_evaluation(s, loss, patience=2, history=[], anneal=12)
    assert e.annealing and not e.stop and not s.stopped_early and (s.anneal_from, s.anneal_steps) == (18, 12)
    assert [anneal_factor(s, k) for k in (17, 18, 24, 29, 30)] == pytest.approx([1, 1, 0.5, 1 / 12, 0])
    s.step = 24
    e = after_evaluation(s, 1.3, patience=2, history=[], anneal=12)  # still flat: the decay goes on
    assert not e.stop and not e.annealing and s.anneal_from == 18 and not anneal_done(s)
    s.step = 30
    assert anneal_done(s)
    s.stopped_early = True  # what the loop sets at the decay's end
    assert stop_reason(s, total=72, patience=2, metric_name="exact match", planned="6 epochs") == (
        "validation loss and exact match flat for 2 evaluations at step 18, then the learning rate decayed to zero "
        "over 12 steps; best at step 6 of 72 planned (6 epochs)")
    s2 = LoopState()
    for step, loss in [(6, 1.0), (12, 1.1), (18, 1.2)]:  # anneal 0 (a decayed rate, or no steps left): stop
        s2.step = step
        e = after_evaluation(s2, loss, patience=2, history=[], anneal=0)
    assert e.stop and s2.anneal_from is None and anneal_factor(s2, 40) == 1.0


COSINE = dict(lr_scheduler_type="cosine", logging_steps=1)


@pytest.fixture(scope="module")
def cosine_run(tiny_dir, tmp_path_factory):
    return _reference(tiny_dir, tmp_path_factory, "cosine", **COSINE)


def test_a_cosine_run_stopped_by_validation_decays_its_rate_to_zero_then_ends(cosine_run):
    run, _ = cosine_run
    info = json.loads((run / "run.json").read_text())
    rows = _rows(run)
    reason = info["stop_reason"]
    assert info["stopped_early"] and "then the learning rate decayed to zero over 4 steps" in reason, reason
    start = int(reason.split(" at step ")[1].split(",")[0])
    assert info["steps"] == start + 4 < 72  # the patience window: 2 evaluations x eval_steps 2
    lr = {r["step"]: r["lr"] for r in rows if "lr" in r}
    peak = lr[start]  # the rate when the patience ran out (cosine, still high)
    assert peak > 0.2 * 0.1
    # the rate of the steps after `start`: the cosine times 1, 3/4, 1/2, 1/4 (logged after each step: next step's)
    cos = _cosine_factors(run)
    assert [lr[start + k] / peak for k in range(1, 4)] == pytest.approx(
        [cos(start + k) / cos(start) * f for k, f in zip(range(1, 4), [0.75, 0.5, 0.25])], rel=1e-6)
    evals = [r["step"] for r in rows if "val_loss" in r]
    assert evals[-1] == info["steps"]  # a last evaluation at the decay's end competes for the best weights
    assert f"training stopped: {reason}" in (run / "README.md").read_text()


def _cosine_factors(run):
    """step -> the plain cosine factor of the run's schedule (its warm-up and 72 planned steps)."""
    from tuneforge.run import read_config
    from tuneforge.train.schedule import lr_factor, warmup_steps

    warm = warmup_steps(TrainConfig(**read_config(run)), 72, 12)
    return lambda step: lr_factor("cosine", step, warm, 72)


def test_a_run_killed_during_the_decay_resumes_it_exactly(cosine_run, tiny_dir):
    ref, tmp = cosine_run
    ref_info = json.loads((ref / "run.json").read_text())
    start = int(ref_info["stop_reason"].split(" at step ")[1].split(",")[0])

    def crash(report):
        if report.step == start + 3:
            raise KeyboardInterrupt  # the checkpoint of step start + 2 holds the decay's state
        return True

    cfg = _cfg(tiny_dir, tmp, "killed", **COSINE)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=crash)
    state = LoopState.from_json(json.loads((tmp / "killed" / "checkpoints" / f"step-{start + 2}" / "state.json")
                                           .read_text()))
    assert (state.anneal_from, state.anneal_steps) == (start, 4)
    run = train(cfg, resume=True, progress=False)
    info = json.loads((run / "run.json").read_text())
    for k in ("steps", "best_step", "stop_reason", "stopped_early"):
        assert info[k] == ref_info[k], k
    assert [r["loss"] for r in _rows(run) if "loss" in r] == [r["loss"] for r in _rows(ref) if "loss" in r]


def test_the_decays_last_evaluation_is_kept_unless_an_earlier_one_beat_it_beyond_noise():
    from tuneforge.train.early_stop import IMPROVEMENT, after_evaluation

    def run(last_loss, last_metric):
        s = LoopState()
        for step, loss in [(6, 1e-4), (12, 2e-4), (18, 2e-4), (24, 2e-4)]:  # best at 6; patience 3 used up at 24
            s.step = step
            after_evaluation(s, loss, metric=1.0, patience=3, history=[], anneal=6)
        assert (s.anneal_from, s.best_step) == (24, 6)
        s.step = 30  # the decay's end
        return after_evaluation(s, last_loss, metric=last_metric, patience=3, history=[], anneal=6), s

    e, s = run(1e-4 + IMPROVEMENT / 2, 1.0)  # same metric, loss within noise of the best: the annealed end wins
    assert e.improved and s.best_step == 30
    e, s = run(1e-4 + 2 * IMPROVEMENT, 1.0)  # clearly worse loss: the earlier weights stay
    assert not e.improved and s.best_step == 6
    e, s = run(0.0, 0.95)  # a lower metric: the earlier weights stay
    assert not e.improved and s.best_step == 6
